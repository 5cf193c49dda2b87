"""Every control command over a real ZMQ socket, reply field by field, and its effect on processes.

The wire contract is Circus 0.19's (`circus-compat.md` sections 2-4); the clients are plain pyzmq
sockets (control_helpers.py), not circus_sd.client.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import zmq
from arbiter_harness import Arbiter, Circus, alive, child_command, read_lines, wait_until
from control_helpers import (
    Clients,
    ControlClient,
    clients,
    control_endpoint,
    events_endpoint,
    real_pids,
    wait_count,
    watcher_sections,
)

pytestmark = pytest.mark.timeout(30)

BARE_REPLY = {"status", "time", "id"}
PROCESS_INFO_KEYS = {
    "pid", "mem_info1", "mem_info2", "cpu", "mem", "ctime", "username", "nice", "cmdline",
    "create_time", "age", "started", "children",
}


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


def _up(
    circus: Circus, zmq_clients: Clients, watchers: dict[str, dict[str, Any]]
) -> tuple[Arbiter, ControlClient]:
    arbiter = circus.start(circus.write_config(watcher_sections(circus, watchers)))
    # The arbiter knows a pid as soon as it was cloned; wait until each has exec'd its command.
    for name, options in watchers.items():
        if str(options.get("autostart", "true")) != "false":
            single = str(options.get("singleton", "false")) == "true"
            wait_count(arbiter, name, 1 if single else int(options.get("numprocesses", 1)))
    return arbiter, zmq_clients.control(control_endpoint(circus.tmp))


def _gone(pids: list[int], timeout: float = 5.0) -> None:
    wait_until(lambda: not any(alive(p) for p in pids), timeout, f"pids {pids} to exit")


# -- looking ---------------------------------------------------------------------------------


def test_status_of_all_watchers_and_of_one(circus: Circus, zmq_clients: Clients) -> None:
    watchers = {"web": {"numprocesses": 2}, "idle": {"autostart": "false"}}
    arbiter, ctl = _up(circus, zmq_clients, watchers)

    # Circus's reply; circus-sd's details only when asked for (they grow with the pids).
    bare = ctl.ok("status")
    assert set(bare) == BARE_REPLY | {"statuses"}
    assert bare["statuses"] == {"idle": "stopped", "web": "active"}
    reply = ctl.ok("status", details=True)
    assert reply["status"] == "ok"
    assert reply["statuses"] == {"idle": "stopped", "web": "active"}
    web = reply["details"]["web"]
    assert web["state"] == "active"
    assert web["pids"] == real_pids(arbiter, "web")
    assert len(web["pids"]) == 2
    assert web["numprocesses"] == 2
    assert web["restarts"] == 0
    assert web["reason"] is None
    assert abs(web["started"] - time.time()) < 30
    assert reply["details"]["idle"]["pids"] == []

    # Circus overwrites the envelope's status with the watcher's.
    one = ctl.ok("status", name="web", details=True)
    assert one["status"] == "active"
    assert list(one["details"]) == ["web"]
    assert "details" not in ctl.ok("status", name="web")
    assert ctl.ok("status", name="idle")["status"] == "stopped"
    assert ctl.ok("status", name="WEB")["status"] == "active", "names match case-insensitively"
    reason = ctl.error("status", 3, name="nope")
    assert "nope" in reason and "not found" in reason


def test_list_numprocesses_numwatchers(circus: Circus, zmq_clients: Clients) -> None:
    arbiter, ctl = _up(circus, zmq_clients, {"web": {"numprocesses": 3}, "db": {}})

    assert ctl.ok("list")["watchers"] == ["db", "web"]
    reply = ctl.ok("list", name="web")
    assert set(reply) == BARE_REPLY | {"pids"}
    assert reply["pids"] == real_pids(arbiter, "web")
    assert len(reply["pids"]) == 3
    assert ctl.ok("list", name="db")["pids"] == real_pids(arbiter, "db")

    reply = ctl.ok("numprocesses", name="web")
    assert (reply["numprocesses"], reply["watcher_name"]) == (3, "web")
    assert ctl.ok("numprocesses")["numprocesses"] == 4
    assert ctl.ok("numwatchers")["numwatchers"] == 2
    assert ctl.ok("listsockets")["sockets"] == []  # no [socket:] section here
    ctl.error("list", 3, name="nope")
    ctl.error("numprocesses", 3, name="nope")


def test_incr_and_decr_with_and_without_waiting(circus: Circus, zmq_clients: Clients) -> None:
    arbiter, ctl = _up(circus, zmq_clients, {"web": {}, "single": {"singleton": "true"}})
    first = wait_count(arbiter, "web", 1)

    reply = ctl.ok("incr", name="web", waiting=True)
    assert reply["numprocesses"] == 2
    assert len(ctl.ok("list", name="web")["pids"]) == 2, "waiting: the reply comes once spawned"
    wait_count(arbiter, "web", 2)

    # Without waiting, the reply is Circus's bare "ok", before the work is done.
    reply = ctl.ok("incr", name="web", nb=2)
    assert set(reply) == BARE_REPLY
    wait_count(arbiter, "web", 4)
    assert ctl.ok("numprocesses", name="web")["numprocesses"] == 4
    assert set(first) <= set(real_pids(arbiter, "web")), "incr keeps the running processes"

    reply = ctl.ok("decr", name="web", nb=3, waiting=True)
    assert reply["numprocesses"] == 1
    assert wait_count(arbiter, "web", 1) == first, "decr stops the highest worker ids"
    reply = ctl.ok("decr", name="web")
    assert set(reply) == BARE_REPLY
    wait_count(arbiter, "web", 0)
    assert ctl.ok("decr", name="web", nb=5, waiting=True)["numprocesses"] == 0
    assert ctl.ok("status", name="web")["status"] == "active"

    singleton = wait_count(arbiter, "single", 1)
    reply = ctl.ok("incr", name="single", nb=3, waiting=True)
    assert (reply["numprocesses"], reply["singleton"]) == (1, True)
    assert real_pids(arbiter, "single") == singleton

    ctl.error("incr", 3, name="nope")
    ctl.error("incr", 3)  # name is required
    ctl.error("incr", 3, name="web", nb=-1)
    ctl.error("incr", 3, name="web", nb="many")
    ctl.error("incr", 3, name="web", nb=float("inf"))  # JSON Infinity: not an integer
    # null is "not given", as for every optional property.
    assert ctl.ok("incr", name="web", nb=None, waiting=True)["numprocesses"] == 1


def test_get_options_and_globaloptions(circus: Circus, zmq_clients: Clients) -> None:
    _arbiter, ctl = _up(circus, zmq_clients, {"web": {"numprocesses": 2, "graceful_timeout": 4}})

    options = ctl.ok("options", name="web")["options"]
    for key in ("cmd", "args", "numprocesses", "warmup_delay", "graceful_timeout", "stop_signal",
                "uid", "gid", "env", "working_dir", "singleton", "max_retry", "priority"):
        assert key in options, key
    assert options["numprocesses"] == 2
    assert "report.py" in options["cmd"]

    reply = ctl.ok("get", name="web", keys=["numprocesses", "graceful_timeout"])
    assert reply["options"] == {"numprocesses": 2, "graceful_timeout": 4.0}
    assert "nosuchkey" in ctl.error("get", 3, name="web", keys=["numprocesses", "nosuchkey"])
    ctl.error("get", 3, name="web", keys="numprocesses")
    ctl.error("get", 3, name="web")
    ctl.error("options", 3, name="nope")

    values = ctl.ok("globaloptions")["options"]
    for key in ("endpoint", "pubsub_endpoint", "stats_endpoint", "check_delay",
                "multicast_endpoint"):
        assert key in values, key
    assert values["endpoint"] == control_endpoint(circus.tmp)
    assert values["pubsub_endpoint"] == events_endpoint(circus.tmp)
    # Circus's types: "" is Circus's own "none" (multicast discovery stays off).
    assert (values["multicast_endpoint"], values["stats_endpoint"]) == ("", "")
    assert values["check_delay"] == 5.0
    reply = ctl.ok("globaloptions", option="endpoint")
    assert reply["options"] == {"endpoint": control_endpoint(circus.tmp)}
    ctl.error("globaloptions", 3, option="nope")


def test_stats_and_dstats(circus: Circus, zmq_clients: Clients) -> None:
    arbiter, ctl = _up(circus, zmq_clients, {"web": {"numprocesses": 2}, "db": {}})
    web = real_pids(arbiter, "web")

    infos = ctl.ok("stats")["infos"]
    assert set(infos) == {"db", "web"}
    assert set(infos["web"]) == {str(pid) for pid in web}
    for pid, info in infos["web"].items():
        assert set(info) >= PROCESS_INFO_KEYS, set(info)
        assert info["pid"] == int(pid)
        assert info["cmdline"] == "python3"
        assert isinstance(info["cpu"], float) and isinstance(info["children"], list)

    reply = ctl.ok("stats", name="web")
    assert reply["name"] == "web"
    assert set(reply["info"]) == {str(pid) for pid in web}
    reply = ctl.ok("stats", name="web", process=web[0], extended=True)
    assert reply["process"] == web[0]
    assert reply["info"]["pid"] == web[0]
    ctl.error("stats", 3, name="web", process=1)
    ctl.error("stats", 3, name="nope")

    info = ctl.ok("dstats")["info"]
    assert set(info) >= PROCESS_INFO_KEYS
    assert info["pid"] == arbiter.pid


# -- lifecycle -------------------------------------------------------------------------------


def test_stop_start_restart_with_waiting_and_info(circus: Circus, zmq_clients: Clients) -> None:
    arbiter, ctl = _up(circus, zmq_clients, {"web": {"numprocesses": 2}, "keep": {}})
    old = wait_count(arbiter, "web", 2)
    keep = real_pids(arbiter, "keep")

    reply = ctl.ok("stop", name="web", waiting=True)
    assert set(reply) == BARE_REPLY
    assert real_pids(arbiter, "web") == [], "waiting: the reply comes once they are gone"
    assert ctl.ok("status", name="web")["status"] == "stopped"

    reply = ctl.ok("start", name="web", waiting=True)
    started = wait_count(arbiter, "web", 2)
    assert reply["info"] == {"started": started, "kept": []}
    assert len(started) == 2 and not set(started) & set(old)
    reply = ctl.ok("start", name="web", waiting=True)
    assert reply["info"] == {"started": [], "kept": started}

    reply = ctl.ok("restart", name="web", waiting=True)
    restarted = wait_count(arbiter, "web", 2)
    assert reply["info"] == {"stopped": started, "started": restarted, "kept": []}
    assert len(restarted) == 2 and not set(restarted) & set(started)
    _gone(started)

    # Without waiting: the bare reply at once, the work after it.
    reply = ctl.ok("stop", name="web")
    assert set(reply) == BARE_REPLY
    wait_until(lambda: ctl.ok("status", name="web")["status"] == "stopped", 5, "web stopped")
    reply = ctl.ok("start", waiting=True)  # no name: every watcher, hence no info
    assert set(reply) == BARE_REPLY
    assert ctl.ok("status")["statuses"] == {"keep": "active", "web": "active"}
    assert real_pids(arbiter, "keep") == keep, "other watchers were not touched"
    ctl.error("stop", 3, name="nope")
    ctl.error("start", 3, name="nope", waiting=True)


def test_reload_graceful_sequential_and_terminate(circus: Circus, zmq_clients: Clients) -> None:
    arbiter, ctl = _up(circus, zmq_clients, {"web": {"numprocesses": 3}})
    events = zmq_clients.events(events_endpoint(circus.tmp))
    old = wait_count(arbiter, "web", 3)
    events.sync(ctl, "web")

    reply = ctl.ok("reload", name="web", waiting=True)
    new = wait_count(arbiter, "web", 3)
    assert reply["info"] == {"stopped": old, "started": new, "kept": []}
    events.wait("watcher.web.reload")
    _gone(old)

    mark = len(events.seen)
    reply = ctl.ok("reload", name="web", sequential=True, waiting=True, timeout=10)
    newer = wait_count(arbiter, "web", 3)
    assert reply["info"] == {"stopped": new, "started": newer, "kept": []}
    events.wait("watcher.web.reload", start=mark)
    # One at a time: process k+1 is only asked to stop once k's replacement was spawned.
    order = [
        (topic.rsplit(".", 1)[1], payload["process_pid"])
        for topic, payload in events.seen[mark:]
        if topic in ("watcher.web.kill", "watcher.web.spawn")
    ]
    assert [event for event, _pid in order] == ["kill", "spawn"] * 3, order
    assert [pid for event, pid in order if event == "kill"] == new
    assert sorted(pid for event, pid in order if event == "spawn") == newer

    reply = ctl.ok("reload", name="web", graceful=False, waiting=True)
    assert reply["info"]["stopped"] == newer
    assert reply["info"]["started"] == wait_count(arbiter, "web", 3)
    reply = ctl.ok("reload", waiting=True)
    assert set(reply) == BARE_REPLY


def test_a_pattern_starts_what_it_matches_and_start_of_all_only_autostart(
    circus: Circus, zmq_clients: Clients
) -> None:
    """As Circus: `autostart = false` keeps a watcher out of `start` with no name, not out of
    a start that names it (one name or a pattern)."""
    _arbiter, ctl = _up(circus, zmq_clients, {
        "job-1": {"autostart": "false"}, "job-2": {"autostart": "false"}, "web": {}})

    def statuses() -> dict[str, str]:
        return dict(ctl.ok("status")["statuses"])

    ctl.ok("start", waiting=True)
    assert statuses() == {"job-1": "stopped", "job-2": "stopped", "web": "active"}
    ctl.ok("start", name="job-*", waiting=True)
    assert statuses() == {"job-1": "active", "job-2": "active", "web": "active"}


def test_match_simple_glob_and_regex(circus: Circus, zmq_clients: Clients) -> None:
    _arbiter, ctl = _up(circus, zmq_clients, {"web-1": {}, "web-2": {}, "worker": {}})

    def statuses() -> dict[str, str]:
        return dict(ctl.ok("status")["statuses"])

    ctl.ok("stop", name="web-*", waiting=True)  # glob is the default
    assert statuses() == {"web-1": "stopped", "web-2": "stopped", "worker": "active"}
    ctl.ok("start", name="web-[0-9]+", match="regex", waiting=True)
    assert statuses() == {"web-1": "active", "web-2": "active", "worker": "active"}
    ctl.ok("stop", name="w.*", match="regex", waiting=True)
    assert set(statuses().values()) == {"stopped"}
    ctl.ok("start", name="*", match="glob", waiting=True)
    ctl.ok("stop", name="web-1", match="simple", waiting=True)
    assert statuses() == {"web-1": "stopped", "web-2": "active", "worker": "active"}

    ctl.error("stop", 3, name="web-*", match="simple")
    ctl.error("stop", 3, name="eb", match="regex")  # re.match: anchored at the start, as Circus
    ctl.error("stop", 3, name="(", match="regex")
    ctl.error("stop", 3, name="web-1", match="fuzzy")
    assert statuses() == {"web-1": "stopped", "web-2": "active", "worker": "active"}


def test_set_live_option_and_restarting_option(circus: Circus, zmq_clients: Clients) -> None:
    arbiter, ctl = _up(circus, zmq_clients, {"web": {}})
    first = circus.reports.wait("web", 1)

    reply = ctl.ok("set", name="web", options={"numprocesses": 3}, waiting=True)
    assert set(reply) == BARE_REPLY
    pids = wait_count(arbiter, "web", 3)
    assert first["pid"] in pids, "numprocesses is live: the running process is kept"
    assert ctl.ok("get", name="web", keys=["numprocesses"])["options"] == {"numprocesses": 3}

    # args changes what runs: the processes are replaced by ones with the new arguments.
    ctl.ok("set", name="web", options={"args": "--tag v2"}, waiting=True)
    _gone(pids)
    for wid in (1, 2, 3):
        report = circus.reports.wait("web", wid, not_pid=pids[wid - 1])
        assert report["argv"][-2:] == ["--tag", "v2"]
    assert len(wait_count(arbiter, "web", 3)) == 3

    ctl.error("set", 3, name="web", options={"nosuchoption": 1})
    ctl.error("set", 3, name="web", options={"numprocesses": "lots"})
    ctl.error("set", 3, name="web", options=["numprocesses", 2])
    ctl.error("set", 3, name="nope", options={"numprocesses": 2})
    assert ctl.ok("get", name="web", keys=["numprocesses"])["options"] == {"numprocesses": 3}


def test_signal_a_pid_a_childpid_and_a_tree(circus: Circus, zmq_clients: Clients) -> None:
    tree_cmd = child_command("tree.py", circus.tmp, "tree", "0", "0")
    arbiter, ctl = _up(circus, zmq_clients, {
        "usr": {"cmd": child_command("report.py", circus.tmp, "usr", "--exit-on-usr1"),
                "numprocesses": 2, "min_uptime": 0},
        # stop_children: at the end, the trees go as a whole.
        "tree": {"cmd": tree_cmd, "numprocesses": 2, "stop_children": "true"},
    })
    usr = [circus.reports.wait("usr", wid)["pid"] for wid in (1, 2)]

    reply = ctl.ok("signal", name="usr", pid=usr[0], signum="USR1")
    assert set(reply) == BARE_REPLY
    _gone([usr[0]])
    assert alive(usr[1]), "only the given pid was signalled"
    circus.reports.wait("usr", 1, not_pid=usr[0])
    ctl.ok("signal", name="usr", signum=int(signal.SIGUSR1))  # every process, signum as a number
    _gone([usr[1]])
    ctl.error("signal", 3, name="usr", pid=1, signum="USR1")
    ctl.error("signal", 3, name="usr", signum="NOSUCHSIGNAL")
    ctl.error("signal", 3, name="usr")  # signum is required

    trees = [circus.reports.wait("tree", wid) for wid in (1, 2)]
    term_log = circus.tmp / "tree.term"

    def roles(report: dict[str, Any]) -> tuple[int, int]:
        child, grandchild = sorted(
            report["descendants"], key=lambda pid: psutil.Process(pid).ppid() != report["pid"]
        )
        return child, grandchild

    child, grandchild = roles(trees[0])
    # Circus reads `childpid`, its docs and plugins send `child_pid`: both work.
    ctl.ok("signal", name="tree", pid=trees[0]["pid"], child_pid=grandchild, signum="TERM")
    wait_until(lambda: f"TERM grandchild {grandchild}" in read_lines(term_log), 5, "grandchild")
    ctl.ok("signal", name="tree", childpid=child, signum="TERM")
    wait_until(lambda: f"TERM child {child}" in read_lines(term_log), 5, "the child TERMed")
    assert not any(line.startswith("TERM worker") for line in read_lines(term_log))
    assert alive(trees[0]["pid"])
    ctl.error("signal", 3, name="tree", childpid=trees[1]["descendants"][0], pid=trees[0]["pid"],
              signum="TERM")
    ctl.error("signal", 3, name="tree", childpid=arbiter.pid, signum="TERM")

    # children: the process and all its descendants.
    expected = {f"TERM worker {trees[1]['pid']}"}
    expected |= {f"TERM {role} {pid}" for role, pid in zip(("child", "grandchild"),
                                                               roles(trees[1]), strict=True)}
    ctl.ok("signal", name="tree", pid=trees[1]["pid"], signum="TERM", children=True)
    wait_until(lambda: expected <= set(read_lines(term_log)), 5, f"{expected} in the term log")
    circus.reports.wait("tree", 2, not_pid=trees[1]["pid"])


def test_kill_escalates_to_sigkill_after_graceful_timeout(
    circus: Circus, zmq_clients: Clients
) -> None:
    arbiter, ctl = _up(circus, zmq_clients, {
        "stubborn": {"cmd": child_command("report.py", circus.tmp, "stubborn", "--ignore-term"),
                     "numprocesses": 2, "graceful_timeout": 1},
    })
    events = zmq_clients.events(events_endpoint(circus.tmp))
    pids = [circus.reports.wait("stubborn", wid)["pid"] for wid in (1, 2)]
    mark = events.sync(ctl, "stubborn")

    started = time.monotonic()
    reply = ctl.ok("kill", name="stubborn", pid=pids[0], graceful_timeout=0.5, waiting=True)
    took = time.monotonic() - started
    assert set(reply) == BARE_REPLY
    assert 0.45 <= took < 4, f"the reply came {took:.2f} s after the kill"
    assert not alive(pids[0])
    assert alive(pids[1]), "only the given pid was killed"
    reap = events.wait("watcher.stubborn.reap", lambda p: p["process_pid"] == pids[0], start=mark)
    assert reap["exit_code"] == -signal.SIGKILL, "TERM was ignored: SIGKILLed after the timeout"
    kills = [p for t, p in events.seen[mark:] if t == "watcher.stubborn.kill"]
    assert [p["process_pid"] for p in kills] == [pids[0], pids[0]], "TERM, then KILL"
    circus.reports.wait("stubborn", 1, not_pid=pids[0])  # a kill is not a stop: respawned

    ctl.error("kill", 3, name="stubborn", pid=1)
    ctl.error("kill", 3, name="nope")
    # signum: KILL at once, every process.
    ctl.ok("kill", name="stubborn", signum="KILL", waiting=True, timeout=3)
    assert not alive(pids[1])
    wait_count(arbiter, "stubborn", 2)


# -- changing what runs ----------------------------------------------------------------------


def test_add_with_start_and_rm(circus: Circus, zmq_clients: Clients) -> None:
    arbiter, ctl = _up(circus, zmq_clients, {"base": {}})
    events = zmq_clients.events(events_endpoint(circus.tmp))
    mark = events.sync(ctl, "base")

    cmd = child_command("report.py", circus.tmp, "added")
    reply = ctl.ok("add", name="added", cmd=cmd, args=["--tag", "x y"],
                   options={"numprocesses": 2, "graceful_timeout": 3}, start=True, waiting=True)
    assert set(reply) == BARE_REPLY
    events.wait("watcher.added.add", start=mark)
    assert ctl.ok("list")["watchers"] == ["added", "base"]
    assert ctl.ok("status", name="added")["status"] == "active"
    added = wait_count(arbiter, "added", 2)
    assert circus.reports.wait("added", 1)["argv"][-2:] == ["--tag", "x y"]
    assert ctl.ok("get", name="added", keys=["graceful_timeout"])["options"] == {
        "graceful_timeout": 3.0
    }

    assert "exists" in ctl.error("add", 3, name="added", cmd=cmd)
    ctl.error("add", 3, name="bad name", cmd=cmd)
    ctl.error("add", 3, name="x", cmd=cmd, options={"numprocesses": "many"})
    ctl.error("add", 3, name="x")  # cmd is required
    ctl.ok("add", name="later", cmd=child_command("report.py", circus.tmp, "later"), waiting=True)
    assert ctl.ok("status", name="later")["status"] == "stopped"
    assert real_pids(arbiter, "later") == []
    ctl.ok("add", name="Mixed", cmd="sleep 1", waiting=True)
    events.wait("watcher.mixed.add", start=mark)  # Circus's topic spelling: lower case

    reply = ctl.ok("rm", name="added", waiting=True)
    assert set(reply) == BARE_REPLY
    events.wait("watcher.added.remove", start=mark)
    assert not any(alive(pid) for pid in added)
    ctl.ok("rm", name="later", waiting=True)
    ctl.ok("rm", name="mixed", waiting=True)
    assert ctl.ok("list")["watchers"] == ["base"]
    assert ctl.ok("numwatchers")["numwatchers"] == 1
    ctl.error("rm", 3, name="added")

    # nostop: removed from supervision, its process left running (then it is ours to kill).
    ctl.ok("add", name="orphan", cmd=child_command("report.py", circus.tmp, "orphan"),
           start=True, waiting=True)
    orphan = circus.reports.wait("orphan", 1)["pid"]
    ctl.ok("rm", name="orphan", nostop=True, waiting=True)
    assert ctl.ok("list")["watchers"] == ["base"]
    try:
        assert alive(orphan)
        time.sleep(0.2)  # not a synchronisation: nothing may stop it in the meantime
        assert alive(orphan)
    finally:
        os.kill(orphan, signal.SIGKILL)
    _gone([orphan])


def test_reloadconfig_applies_a_good_edit_and_refuses_a_broken_one(
    circus: Circus, zmq_clients: Clients
) -> None:
    arbiter, ctl = _up(circus, zmq_clients, {"web": {}})
    first = wait_count(arbiter, "web", 1)

    circus.write_config(watcher_sections(circus, {"web": {"numprocesses": 2}, "extra": {}}))
    reply = ctl.ok("reloadconfig", waiting=True, timeout=10)
    assert set(reply) == BARE_REPLY
    assert ctl.ok("list")["watchers"] == ["extra", "web"]
    assert ctl.ok("status")["statuses"] == {"extra": "active", "web": "active"}
    web = wait_count(arbiter, "web", 2)
    assert first[0] in web
    extra = wait_count(arbiter, "extra", 1)

    circus.write_config(watcher_sections(circus, {"web": {"numprocesses": "lots"}}))
    reason = ctl.error("reloadconfig", 3, waiting=True, timeout=10)
    assert "numprocesses" in reason and "lots" in reason, reason
    assert ctl.ok("list")["watchers"] == ["extra", "web"], "the old configuration is kept"
    assert real_pids(arbiter, "web") == web
    assert real_pids(arbiter, "extra") == extra
    assert ctl.ok("get", name="web", keys=["numprocesses"])["options"] == {"numprocesses": 2}


def test_quit_with_waiting_replies_then_exits(circus: Circus, zmq_clients: Clients) -> None:
    arbiter, ctl = _up(circus, zmq_clients, {"web": {"numprocesses": 2}, "db": {}})
    pids = real_pids(arbiter, "web") + real_pids(arbiter, "db")

    reply = ctl.ok("quit", waiting=True, timeout=10)
    assert set(reply) == BARE_REPLY
    assert arbiter.wait_exit(10) == 0
    assert not any(alive(pid) for pid in pids)
    assert circus.leftovers() == []


# -- the envelope ----------------------------------------------------------------------------


def test_cast_gets_no_reply_but_takes_effect(circus: Circus, zmq_clients: Clients) -> None:
    arbiter, ctl = _up(circus, zmq_clients, {"web": {}})

    ctl.request("incr", cast=True, name="web", nb=2)
    wait_count(arbiter, "web", 3)
    ctl.request("frobnicate", cast=True)  # not even an error reply
    ctl.silent(0.3)
    assert ctl.ok("numprocesses", name="web")["numprocesses"] == 3


def test_a_req_client_is_answered_in_its_envelope(circus: Circus, zmq_clients: Clients) -> None:
    circus.start(circus.write_config(watcher_sections(circus, {"web": {}})))
    req = zmq_clients.control(control_endpoint(circus.tmp), zmq.REQ)

    req.send({"id": "r1", "command": "list", "properties": {}})
    reply = req.receive()
    assert (reply["status"], reply["id"], reply["watchers"]) == ("ok", "r1", ["web"])
    req.send({"id": "r2", "command": "nope"})
    reply = req.receive()
    assert (reply["status"], reply["id"], reply["errno"]) == ("error", "r2", 2)


def test_malformed_and_unsupported_requests_get_error_replies(
    circus: Circus, zmq_clients: Clients
) -> None:
    arbiter, ctl = _up(circus, zmq_clients, {"web": {}})

    assert "pub/sub" in ctl.error("listen", 3)
    assert "not supported" in ctl.error("ipython", 3)
    assert ctl.error("frobnicate", 2) == "unknown command: 'frobnicate'"
    assert ctl.ok("LIST")["watchers"] == ["web"], "commands are case-insensitive"

    def raw(data: bytes) -> dict[str, Any]:
        ctl.send(data)
        return ctl.receive()

    reply = raw(b"{not json")
    assert (reply["status"], reply["errno"], reply["id"]) == ("error", 1, None)
    reply = raw(b"")
    assert (reply["status"], reply["errno"]) == ("error", 1)
    reply = raw(b"[1, 2]")
    assert (reply["status"], reply["errno"]) == ("error", 1)
    reply = raw(json.dumps({"id": "no-command", "properties": {}}).encode())
    assert (reply["status"], reply["errno"], reply["id"]) == ("error", 3, "no-command")
    reply = raw(json.dumps({"id": "p", "command": "list", "properties": [1]}).encode())
    assert (reply["status"], reply["errno"], reply["id"]) == ("error", 3, "p")
    reply = raw(json.dumps({"id": "n", "command": "list", "properties": None}).encode())
    assert (reply["status"], reply["id"]) == ("ok", "n")
    reply = raw(json.dumps({"command": "numwatchers"}).encode())
    assert (reply["status"], reply["id"], reply["numwatchers"]) == ("ok", None, 1)
    # A multi-frame message is not a request: dropped, as Circus does, and nothing breaks.
    ctl.socket.send_multipart([b"a", b"b", b"c"])
    ctl.silent(0.2)
    assert ctl.ok("status", name="web")["status"] == "active"
    assert arbiter.running()


# -- events ----------------------------------------------------------------------------------


def test_events_of_a_watcher_lifecycle(circus: Circus, zmq_clients: Clients) -> None:
    arbiter, ctl = _up(circus, zmq_clients, {"web": {}})
    events = zmq_clients.events(events_endpoint(circus.tmp))
    first = wait_count(arbiter, "web", 1)[0]
    mark = events.sync(ctl, "web")

    ctl.ok("incr", name="web", waiting=True)
    second = next(pid for pid in ctl.ok("list", name="web")["pids"] if pid != first)
    spawn = events.wait("watcher.web.spawn", start=mark)
    assert set(spawn) == {"process_pid", "time"} and spawn["process_pid"] == second

    os.kill(first, signal.SIGKILL)
    reap = events.wait("watcher.web.reap", start=mark)
    assert reap == {"process_pid": first, "exit_code": -signal.SIGKILL, "time": reap["time"]}
    respawn = events.wait("watcher.web.spawn", lambda p: p["process_pid"] != second, start=mark)
    running = sorted([second, respawn["process_pid"]])
    wait_until(lambda: real_pids(arbiter, "web") == running, 5, "the respawned process")

    mark = len(events.seen)
    ctl.ok("stop", name="web", waiting=True)
    events.wait("watcher.web.stop", start=mark)
    kills = {p["process_pid"] for t, p in events.seen[mark:] if t == "watcher.web.kill"}
    assert kills == set(running)
    reaps = {p["process_pid"]: p["exit_code"] for t, p in events.seen[mark:]
             if t == "watcher.web.reap"}
    assert reaps == {pid: -signal.SIGTERM for pid in running}
    stop_at = events.topics(mark).index("watcher.web.stop")
    assert all(t != "watcher.web.reap" for t in events.topics(mark)[stop_at:]), "stop comes last"

    mark = len(events.seen)
    ctl.ok("start", name="web", waiting=True)
    start = events.wait("watcher.web.start", start=mark)
    assert set(start) == {"time"}
    assert events.topics(mark).count("watcher.web.spawn") == 2

    mark = len(events.seen)
    ctl.ok("set", name="web", options={"numprocesses": 1}, waiting=True)
    assert set(events.wait("watcher.web.updated", start=mark)) == {"time"}
    ctl.ok("reload", name="web", waiting=True)
    assert set(events.wait("watcher.web.reload", start=mark)) == {"time"}
    ctl.ok("add", name="other", cmd="sleep 1", waiting=True)
    assert set(events.wait("watcher.other.add", start=mark)) == {"time"}
    ctl.ok("rm", name="other", waiting=True)
    assert set(events.wait("watcher.other.remove", start=mark)) == {"time"}


def test_backoff_and_flapping_events(circus: Circus, zmq_clients: Clients) -> None:
    _arbiter, ctl = _up(circus, zmq_clients, {
        "crash": {"cmd": "/bin/sh -c 'exit 3'", "autostart": "false", "backoff_initial": 0.05,
                  "backoff_max": 0.05, "flapping.attempts": 2, "flapping.window": 5,
                  "flapping.retry_in": 0.3, "flapping.max_retry": -1},
    })
    events = zmq_clients.events(events_endpoint(circus.tmp))
    mark = events.sync(ctl, "crash")

    ctl.ok("start", name="crash")
    reap = events.wait("watcher.crash.reap", start=mark)
    assert reap["exit_code"] == 3
    backoff = events.wait("watcher.crash.backoff", start=mark)
    assert set(backoff) == {"wid", "failures", "delay", "time"}
    assert (backoff["wid"], backoff["failures"]) == (1, 1)
    assert 0.04 <= backoff["delay"] <= 0.06
    flapping = events.wait("watcher.crash.flapping", start=mark)
    assert flapping == {
        "attempts": 2, "window": 5.0, "retry_in": 0.3, "tries": 0, "max_retry": -1,
        "give_up": False, "time": flapping["time"],
    }
    index = events.topics(mark).index("watcher.crash.flapping")
    events.wait("watcher.crash.stop", start=mark + index)
    # The pause ends after retry_in: started again, flapping again, one try further.
    again = events.wait("watcher.crash.flapping", lambda p: p["tries"] == 1, start=mark)
    assert again["give_up"] is False
    details = ctl.ok("status", name="crash", details=True)["details"]["crash"]
    assert details["state"] in ("paused", "starting", "active", "stopping")
    ctl.ok("stop", name="crash", waiting=True)
    assert ctl.ok("status", name="crash")["status"] == "stopped"


def test_stop_right_after_start_is_not_lost(circus: Circus, zmq_clients: Clients) -> None:
    """A stop may reach a process before its exec; it must still stop it, not wait for SIGKILL.

    (It used to be swallowed by the handlers the not-yet-exec'd child inherits from the spawner.)
    """
    arbiter, ctl = _up(circus, zmq_clients, {
        "web": {"cmd": child_command("report.py", circus.tmp, "web"), "numprocesses": 3,
                "graceful_timeout": 30},
    })

    for _ in range(15):
        ctl.ok("start", name="web", waiting=True, timeout=3)
        ctl.ok("stop", name="web", waiting=True, timeout=3)
    assert "SIGKILL" not in arbiter.log()
    wait_count(arbiter, "web", 0)
