"""An arbiter that died without handing its state over leaves its workers running; the next
arbiter on the same file takes them over instead of starting a second set.

From the outside: a real arbiter is SIGKILLed (as outside systemd nothing else stops its
children), a second one is started on the same file, and what a user sees is checked: the
same pids in `list`, no new spawn in the workers' own history, a wid above the new
numprocesses stopped, an adopted worker that dies restarted, and a stop that stops them all.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from arbiter_harness import Circus, alive, report_command, wait_until

from circus_sd.client import CircusClient

pytestmark = pytest.mark.timeout(90)

CALL_TIMEOUT = 10.0


def config(circus: Circus, web: int) -> Path:
    return circus.write_config(f"""
        [circus]
        cgroup = off

        [watcher:web]
        cmd = {report_command(circus.tmp, "web")}
        numprocesses = {web}
        graceful_timeout = 5

        [watcher:solo]
        cmd = {report_command(circus.tmp, "solo")}
        """)


def pids_of(circus: Circus, name: str) -> list[int]:
    with CircusClient(f"ipc://{circus.tmp}/control.sock", CALL_TIMEOUT) as client:
        reply = client.call("list", name=name)
    assert reply["status"] == "ok", reply
    return sorted(reply["pids"])


def test_a_new_arbiter_takes_over_the_workers_of_one_that_was_killed(circus: Circus) -> None:
    first = circus.start(config(circus, web=3))
    web = {wid: circus.reports.wait("web", wid)["pid"] for wid in (1, 2, 3)}
    solo = circus.reports.wait("solo", 1)["pid"]

    first.send(signal.SIGKILL)
    first.wait_exit(5.0)
    assert all(alive(pid) for pid in [*web.values(), solo]), "SIGKILL reaches the arbiter only"

    # The operator lowers web to 2, then starts circus-sd again on the file.
    second = circus.start(config(circus, web=2))
    second.wait_log("taking them over")

    assert pids_of(circus, "web") == sorted([web[1], web[2]])
    assert pids_of(circus, "solo") == [solo]
    # Nothing was spawned again: each watcher's history holds only the first arbiter's starts.
    assert len(circus.reports.history("web")) == 3
    assert len(circus.reports.history("solo")) == 1
    # wid 3 is above numprocesses now: stopped, as a running arbiter's `set` would.
    wait_until(lambda: not alive(web[3]), 5.0, "web[3], not wanted, to be stopped",
               second.log_tail)
    assert second.count("not wanted now") == 1

    # An adopted worker is supervised: it dies, it is started again in its wid.
    import os

    os.kill(solo, signal.SIGKILL)
    again = circus.reports.wait("solo", 1, timeout=10.0, not_pid=solo)
    assert pids_of(circus, "solo") == [again["pid"]]
    assert "status unknown" in second.log()  # not its child: the status went to another parent

    # And stopped with the arbiter, though not its children.
    assert second.stop() == 0
    assert not any(alive(pid) for pid in (web[1], web[2], again["pid"]))


def test_a_reexecution_whose_state_is_unusable_keeps_the_processes(circus: Circus) -> None:
    # The new program refuses the state it was handed (injected): the same arbiter process
    # starts from the file, and its children, still its children, are taken over.
    import os

    env = {**os.environ, "CIRCUS_SD_INJECT_FAULT": "handover"}
    arbiter = circus.start(config(circus, web=2), env=env)
    web = sorted(circus.reports.wait("web", wid)["pid"] for wid in (1, 2))
    solo = circus.reports.wait("solo", 1)["pid"]

    with CircusClient(f"ipc://{circus.tmp}/control.sock", CALL_TIMEOUT) as client:
        assert client.call("reexec")["status"] == "ok"
    arbiter.wait_log("taking them over", timeout=15.0)
    wait_until(lambda: "circus-sd running" in arbiter.log().split("taking them over")[-1],
               10.0, "the re-executed arbiter to run", arbiter.log_tail)

    assert arbiter.running()
    assert pids_of(circus, "web") == web
    assert pids_of(circus, "solo") == [solo]
    assert len(circus.reports.history("web")) == 2

    # Still its own children: an exit's status is known again.
    os.kill(solo, signal.SIGKILL)
    circus.reports.wait("solo", 1, timeout=10.0, not_pid=solo)
    arbiter.wait_log("killed by SIGKILL")
