"""Processes of a running watcher: worker ids, respawn after a kill, max_age, respawn, singleton."""

from __future__ import annotations

import os
import signal

import psutil
import pytest
from arbiter_harness import Circus, alive, report_command, stays_equal, wait_until

# Each test takes a few seconds; this only bounds a hang.
pytestmark = pytest.mark.timeout(30)


def test_processes_come_up_with_worker_ids_1_to_n(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:web]
        cmd = {report_command(circus.tmp, "web")}
        numprocesses = 3
        """)
    arbiter = circus.start(config)

    reports = {wid: circus.reports.wait("web", wid) for wid in (1, 2, 3)}

    for wid, report in reports.items():
        assert report["wid"] == str(wid), "$(circus.wid) in args"
        assert report["wid_env"] == str(wid), "CIRCUS_WID in the environment"
        assert report["ppid"] == arbiter.pid, "the arbiter is the parent of its processes"
        assert alive(report["pid"])
    pids = {report["pid"] for report in reports.values()}
    assert len(pids) == 3
    assert circus.reports.wids("web") == [1, 2, 3]
    assert arbiter.worker_pids() == pids


def test_killed_process_is_replaced_with_the_same_wid(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:web]
        cmd = {report_command(circus.tmp, "web")}
        numprocesses = 3
        """)
    arbiter = circus.start(config)
    before = {wid: circus.reports.wait("web", wid) for wid in (1, 2, 3)}
    others = {wid: psutil.Process(before[wid]["pid"]) for wid in (1, 3)}

    os.kill(before[2]["pid"], signal.SIGKILL)
    replacement = circus.reports.wait("web", 2, timeout=3.0, not_pid=before[2]["pid"])

    assert replacement["wid_env"] == "2"
    assert replacement["ppid"] == arbiter.pid
    assert alive(replacement["pid"])
    assert not alive(before[2]["pid"])
    for wid, process in others.items():
        assert process.is_running(), f"web[{wid}] was touched by the restart of web[2]"
        assert circus.reports.get("web", wid) == before[wid]
    assert len(circus.reports.history("web")) == 4
    assert arbiter.worker_pids() == {before[1]["pid"], replacement["pid"], before[3]["pid"]}


def test_max_age_replaces_the_process(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:aging]
        cmd = {report_command(circus.tmp, "aging")}
        max_age = 1
        max_age_variance = 0
        """)
    arbiter = circus.start(config)
    first = circus.reports.wait("aging", 1)
    # When the kernel created each process: independent of how fast the children start up.
    born = psutil.Process(first["pid"]).create_time()

    second = circus.reports.wait("aging", 1, timeout=4.0, not_pid=first["pid"])

    age = psutil.Process(second["pid"]).create_time() - born
    assert 0.95 <= age <= 2.0, f"replaced after {age:.2f} s, max_age is 1 s"
    assert second["wid_env"] == "1"
    wait_until(lambda: not alive(first["pid"]), 2.0, f"the old process {first['pid']} to end")
    assert arbiter.worker_pids() == {second["pid"]}
    assert "reached max_age" in arbiter.log()


def test_process_that_exits_is_not_restarted_without_respawn(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:oneshot]
        cmd = {report_command(circus.tmp, "oneshot", "--exit-on-usr1")}
        numprocesses = 2
        respawn = false
        """)
    arbiter = circus.start(config)
    first = circus.reports.wait("oneshot", 1)
    second = circus.reports.wait("oneshot", 2)

    os.kill(first["pid"], signal.SIGUSR1)
    arbiter.wait_log(r"oneshot\[1\] pid \d+ exited with status 0.*not restarted")

    stays_equal(lambda: len(circus.reports.history("oneshot")), 1.0, "the number of spawns")
    assert circus.reports.get("oneshot", 1) == first
    assert not alive(first["pid"])
    assert alive(second["pid"])
    assert arbiter.worker_pids() == {second["pid"]}


def test_singleton_runs_one_process(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:only]
        cmd = {report_command(circus.tmp, "only")}
        numprocesses = 3
        singleton = true
        """)
    arbiter = circus.start(config)
    report = circus.reports.wait("only", 1)

    stays_equal(arbiter.worker_pids, 1.0, "the arbiter's processes")
    assert arbiter.worker_pids() == {report["pid"]}
    assert circus.reports.wids("only") == [1]
