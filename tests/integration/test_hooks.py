"""Circus's hooks: called in order with Circus's arguments, aborting a start, failing safely.

The hooks are a module written next to the test's config file (its directory is searched); each
call appends a JSON line to records.jsonl there.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from arbiter_harness import Circus, alive, report_command, wait_until
from control_helpers import (
    Clients,
    ControlClient,
    clients,
    control_endpoint,
    events_endpoint,
    wait_count,
)

pytestmark = pytest.mark.timeout(60)

PROBE = '''
import json, os, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))


def _record(hook_name, watcher, arbiter, **extra):
    entry = {
        "hook": hook_name,
        "watcher": watcher.name,
        "pids": list(watcher.pids),
        "numprocesses": watcher.numprocesses,
        "state": watcher.state,
        "watchers": list(arbiter.watchers),
        "has_options": "graceful_timeout" in watcher.options,
        "thread": threading.current_thread().name,
        "kwargs": extra,
    }
    with open(os.path.join(HERE, "records.jsonl"), "a") as f:
        f.write(json.dumps(entry) + "\\n")


def record(watcher, arbiter, hook_name, **kwargs):
    _record(hook_name, watcher, arbiter, **kwargs)
    return True


def record_with_client(watcher, arbiter, hook_name, **kwargs):
    reply = arbiter.client.call("numwatchers")
    _record(hook_name, watcher, arbiter, numwatchers=reply["numwatchers"], **kwargs)
    return True


async def record_async(watcher, arbiter, hook_name, **kwargs):
    reply = await arbiter.async_client.call("list")
    _record(hook_name, watcher, arbiter, listed=reply["watchers"], **kwargs)
    return True


def refuse(watcher, arbiter, hook_name, **kwargs):
    _record(hook_name, watcher, arbiter, **kwargs)
    return False


def refuse_hup(watcher, arbiter, hook_name, pid, signum):
    _record(hook_name, watcher, arbiter, pid=pid, signum=signum)
    return signum != 1


def boom(watcher, arbiter, hook_name, **kwargs):
    _record(hook_name, watcher, arbiter, **kwargs)
    raise RuntimeError("boom")


def hang(watcher, arbiter, hook_name, **kwargs):
    _record(hook_name, watcher, arbiter, **kwargs)
    time.sleep(120)


def extend(watcher, arbiter, hook_name, pid, stats):
    stats["probe"] = pid
'''

LIFECYCLE = [
    "before_start",
    "before_spawn",
    "after_spawn",
    "after_start",
    "before_stop",
    "before_signal",
    "after_signal",
    "before_reap",
    "after_reap",
    "after_stop",
]


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


@pytest.fixture
def probe(circus: Circus) -> None:
    (circus.tmp / "probe_hooks.py").write_text(PROBE)


def records(circus: Circus) -> list[dict[str, Any]]:
    try:
        text = (circus.tmp / "records.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines()]


def hooks_of(circus: Circus, watcher: str | None = None) -> list[str]:
    return [r["hook"] for r in records(circus) if watcher in (None, r["watcher"])]


def watcher(circus: Circus, name: str, **options: str) -> str:
    lines = [f"[watcher:{name}]", f"cmd = {report_command(circus.tmp, name)}"]
    lines += [f"{key.replace('__', '.')} = {value}" for key, value in options.items()]
    return "\n".join(lines) + "\n\n"


def details(ctl: ControlClient, name: str) -> dict[str, Any]:
    reply = ctl.ok("status", name=name, details=True)
    return dict(reply["details"][name])


@pytest.mark.usefixtures("probe")
def test_each_hook_fires_once_in_order_with_circus_arguments(
    circus: Circus, zmq_clients: Clients
) -> None:
    hooks = {f"hooks__{hook}": "probe_hooks.record" for hook in LIFECYCLE}
    hooks["hooks__before_start"] = "probe_hooks.record_with_client"
    hooks["hooks__after_start"] = "probe_hooks.record_async"
    hooks["hooks__extended_stats"] = "probe_hooks.extend"
    config = circus.write_config(watcher(circus, "web", graceful_timeout="5", **hooks))
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    events = zmq_clients.events(events_endpoint(circus.tmp))
    # `circus-sd running` comes after the start, hence after after_start returned.
    assert hooks_of(circus) == LIFECYCLE[:4]
    (pid,) = wait_count(arbiter, "web", 1)

    # extended_stats may add to each process's stats.
    info = ctl.ok("stats", name="web", extended=True)["info"]
    assert info[str(pid)]["probe"] == pid
    assert "probe" not in ctl.ok("stats", name="web")["info"][str(pid)]
    assert ctl.ok("options", name="web")["options"]["hooks.before_start"] == (
        "probe_hooks.record_with_client"
    )

    mark = events.sync(ctl, "web")
    ctl.ok("stop", name="web", waiting=True, timeout=15)
    wait_until(lambda: len(records(circus)) == len(LIFECYCLE), 5, "the after_stop hook")
    assert hooks_of(circus) == LIFECYCLE
    got = {r["hook"]: r for r in records(circus)}
    assert {hook: r["kwargs"] for hook, r in got.items() if hook != "before_reap" and
            hook != "after_reap"} == {
        "before_start": {"numwatchers": 1},
        "before_spawn": {},
        "after_spawn": {"pid": pid},
        "after_start": {"listed": ["web"]},
        "before_stop": {},
        "before_signal": {"pid": pid, "signum": 15},
        "after_signal": {"pid": pid, "signum": 15},
        "after_stop": {},
    }
    before_reap, after_reap = got["before_reap"]["kwargs"], got["after_reap"]["kwargs"]
    assert before_reap["process_pid"] == after_reap["process_pid"] == pid
    assert abs(before_reap["time"] - time.time()) < 30
    assert (after_reap["exit_code"], after_reap["process_status"]) == (-15, 2)
    # What hooks see of the watcher: a snapshot when the hook was due.
    assert [got[h]["pids"] for h in ("before_start", "after_spawn", "before_stop", "after_stop")] \
        == [[], [pid], [pid], []]
    assert {(r["watcher"], r["numprocesses"], tuple(r["watchers"]), r["has_options"])
            for r in records(circus)} == {("web", 1, ("web",), True)}
    # Plain hooks run in a thread of their own; `async def` ones on the loop.
    assert got["before_start"]["thread"] == "hook web before_start"
    assert got["after_start"]["thread"] == "MainThread"
    for hook in LIFECYCLE[4:]:
        assert events.wait("watcher.web.hook_success", lambda p, h=hook: p["name"] == h,
                           start=mark)


@pytest.mark.usefixtures("probe")
@pytest.mark.parametrize("hook", ["before_start", "before_spawn", "after_spawn", "after_start"])
def test_a_hook_returning_false_stops_the_start(
    circus: Circus, zmq_clients: Clients, hook: str
) -> None:
    config = circus.write_config(watcher(
        circus, "web",
        numprocesses="2",
        **{f"hooks__{hook}": "probe_hooks.refuse",
           "hooks__before_stop": "probe_hooks.record",
           "hooks__after_stop": "probe_hooks.record"},
    ))
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    wait_until(lambda: details(ctl, "web")["state"] == "failed", 10, "web to be given up",
               arbiter.log_tail)
    state = details(ctl, "web")
    assert state["reason"] == f"start aborted by the {hook} hook"
    assert state["pids"] == []
    assert ctl.ok("status", name="web")["status"] == "stopped"  # what Circus clients see
    arbiter.wait_log(rf"web: the {hook} hook returned False or failed: stopping the watcher")
    assert arbiter.workers() == []
    # What the refusing hook saw: no process yet, or the ones it refused (now gone).
    seen = {pid for r in records(circus) if r["hook"] == hook for pid in r["pids"]}
    if hook in ("before_start", "before_spawn"):
        assert seen == set() and circus.reports.history("web") == []
    else:
        assert seen and not any(alive(pid) for pid in seen)
    # As in Circus: a refused before_start stops nothing, the others stop the watcher.
    stop_hooks = [h for h in hooks_of(circus) if h in ("before_stop", "after_stop")]
    assert stop_hooks == ([] if hook == "before_start" else ["before_stop", "after_stop"])
    # An operator's start tries again (and the hook refuses again).
    ctl.ok("start", name="web", waiting=True, timeout=15)
    assert details(ctl, "web")["state"] == "failed"


@pytest.mark.usefixtures("probe")
def test_a_raising_and_a_hanging_hook_are_reported_and_supervision_goes_on(
    circus: Circus, zmq_clients: Clients
) -> None:
    config = circus.write_config(
        watcher(circus, "raiser", hooks__after_spawn="probe_hooks.boom")
        + watcher(circus, "tolerant", hooks__before_start="probe_hooks.boom, true")
        + watcher(circus, "hanger", hooks__after_start="probe_hooks.hang", hook_timeout="2",
                  autostart="false")
        + watcher(circus, "steady")
    )
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    events = zmq_clients.events(events_endpoint(circus.tmp))

    # Raising: reported with its traceback; after_spawn's failure counts as "no".
    log = arbiter.wait_log(
        r"raiser: hook after_spawn \(probe_hooks.boom\) failed: RuntimeError: boom\n"
        r"Traceback[^\n]*\n(?:[^\n]*\n)*?RuntimeError: boom"
    )
    assert log
    assert details(ctl, "raiser")["reason"] == "start aborted by the after_spawn hook"
    # ... unless its errors are ignored (`, true`).
    arbiter.wait_log(r"tolerant: hook before_start \(probe_hooks.boom\) failed: RuntimeError: "
                     r"boom \(failure ignored\)")
    assert details(ctl, "tolerant")["state"] == "active"

    # Hanging: the start waits for the hook's deadline only; meanwhile all else goes on.
    mark = events.sync(ctl, "steady")
    started = time.monotonic()
    ctl.ok("start", name="hanger")  # not waiting
    wait_until(lambda: "after_start" in hooks_of(circus, "hanger"), 5, "the hanging hook")
    (old,) = wait_count(arbiter, "steady", 1)
    ask_started = time.monotonic()
    assert details(ctl, "steady")["state"] == "active"
    assert time.monotonic() - ask_started < 1.0
    os.kill(old, 9)
    wait_until(lambda: wait_count(arbiter, "steady", 1) != [old], 5, "steady to be respawned")
    assert time.monotonic() - started < 2.0, "all this happened during the hang"
    failure = events.wait(
        "watcher.hanger.hook_failure", lambda p: p["name"] == "after_start", start=mark
    )
    assert failure["error"] == "did not return within 2 s (hook_timeout): counted as failed"
    assert 1.9 < time.monotonic() - started < 5
    wait_until(lambda: details(ctl, "hanger")["state"] == "failed", 5, "hanger to be given up")
    assert details(ctl, "hanger")["reason"] == "start aborted by the after_start hook"
    assert arbiter.count(r"hanger: hook after_start \(probe_hooks.hang\) failed: did not "
                         r"return within 2 s") == 1

    # The raising hook's event, on an operator's restart.
    ctl.ok("start", name="raiser", waiting=True, timeout=15)
    failure = events.wait("watcher.raiser.hook_failure", start=mark)
    assert failure == {"name": "after_spawn", "error": "RuntimeError: boom",
                       "time": failure["time"]}
    assert details(ctl, "steady")["state"] == "active"


@pytest.mark.usefixtures("probe")
def test_before_signal_returning_false_keeps_the_signal_from_being_sent(
    circus: Circus, zmq_clients: Clients
) -> None:
    config = circus.write_config(watcher(
        circus, "web",
        hooks__before_signal="probe_hooks.refuse_hup",
        hooks__after_signal="probe_hooks.record",
    ))
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    (pid,) = wait_count(arbiter, "web", 1)
    ctl.ok("signal", name="web", signum="HUP")
    wait_until(lambda: hooks_of(circus) == ["before_signal", "after_signal"], 5, "the hooks")
    assert alive(pid)  # SIGHUP would have killed report.py
    assert re.search(rf"web: the before_signal hook said no: signal 1 not sent to pid {pid}",
                     arbiter.log())
    ctl.ok("stop", name="web", waiting=True, timeout=10)  # SIGTERM is allowed
    assert not alive(pid)


def test_a_hook_that_cannot_be_imported_yet_is_a_warning_strict_refuses(circus: Circus) -> None:
    # Circus runs such a file; the hook is imported again when due (it may be installed later).
    config = circus.write_config(textwrap.dedent(f"""
        [watcher:web]
        cmd = {report_command(circus.tmp, "web")}
        hooks.before_start = no_such_module.hook
        """))
    result = circus.run("--check", str(config))
    strict = circus.run("--check", "--strict", str(config))
    assert (result.returncode, strict.returncode) == (0, 78)
    for output in (result.stderr, strict.stderr):
        assert "[watcher:web] hooks.before_start: cannot import no_such_module.hook" in output
