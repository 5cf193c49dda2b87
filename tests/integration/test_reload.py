"""SIGHUP: the arbiter re-reads its config file and applies only what changed."""

from __future__ import annotations

import functools
import signal
from typing import Any

import psutil
import pytest
from arbiter_harness import Arbiter, Circus, alive, gone, report_command, stays_equal, wait_until

# Each test takes a few seconds; this only bounds a hang.
pytestmark = pytest.mark.timeout(30)

RELOADED = r"configuration reloaded from"
REFUSED = r"reload refused, keeping the running configuration"


def _reload(arbiter: Arbiter, pattern: str = RELOADED) -> None:
    """SIGHUP, then wait for the log line that ends this reload (one more than before)."""
    before = arbiter.count(pattern)
    arbiter.send(signal.SIGHUP)
    arbiter.wait_log(pattern, timeout=10.0, count=before + 1)


def _sections(circus: Circus, watchers: dict[str, dict[str, Any]]) -> str:
    text = ""
    for name, options in watchers.items():
        tag = options.pop("tag", "v1")
        text += f"[watcher:{name}]\ncmd = {report_command(circus.tmp, name, tag)}\n"
        text += "".join(f"{key} = {value}\n" for key, value in options.items()) + "\n"
    return text


def test_sighup_applies_an_edited_config(circus: Circus) -> None:
    config = circus.write_config(_sections(circus, {
        "grow": {"numprocesses": 2},
        "shrink": {"numprocesses": 3},
        "change": {},
        "gone": {},
        "keep": {},
    }))
    arbiter = circus.start(config)
    started = [("grow", 1), ("grow", 2), ("change", 1), ("gone", 1), ("keep", 1)]
    started += [("shrink", wid) for wid in (1, 2, 3)]
    before = {(name, wid): circus.reports.wait(name, wid) for name, wid in started}
    # Taken while they run: a handle that tells "exited" apart from "pid reused".
    processes = {key: psutil.Process(report["pid"]) for key, report in before.items()}

    circus.write_config(_sections(circus, {
        "grow": {"numprocesses": 4},
        "shrink": {"numprocesses": 1},
        "change": {"tag": "v2"},
        "keep": {},
        "added": {},
    }))
    _reload(arbiter)

    # (a) only numprocesses changed: resized, the running processes are kept.
    for wid in (1, 2):
        assert alive(before["grow", wid]["pid"]), f"grow[{wid}] was restarted by a resize"
        assert circus.reports.get("grow", wid) == before["grow", wid]
    grown = [circus.reports.wait("grow", wid) for wid in (3, 4)]
    assert all(alive(report["pid"]) for report in grown)
    # ... and the other way: the highest worker ids stop, the first one is kept.
    for wid in (2, 3):
        stopping = processes["shrink", wid]
        wait_until(
            functools.partial(gone, stopping), 5.0, f"shrink[{wid}] (pid {stopping.pid}) to stop"
        )
    assert alive(before["shrink", 1]["pid"])
    assert len(circus.reports.history("shrink")) == 3
    # (b) the command changed: new processes, started with the new command.
    changed = circus.reports.wait("change", 1, not_pid=before["change", 1]["pid"])
    assert changed["argv"][-1] == "v2"
    assert not alive(before["change", 1]["pid"])
    # (c) removed from the file: its process stops.
    removed = processes["gone", 1]
    wait_until(functools.partial(gone, removed), 5.0, "the removed watcher's process to stop")
    # (d) added to the file: started.
    added = circus.reports.wait("added", 1)
    # An unchanged watcher is left alone.
    assert alive(before["keep", 1]["pid"])
    assert len(circus.reports.history("keep")) == 1

    expected = {
        before["grow", 1]["pid"], before["grow", 2]["pid"], *(r["pid"] for r in grown),
        before["shrink", 1]["pid"], changed["pid"], before["keep", 1]["pid"], added["pid"],
    }
    wait_until(lambda: arbiter.worker_pids() == expected, 5.0, "exactly the new set of processes")


def test_sighup_refuses_a_broken_config(circus: Circus) -> None:
    config = circus.write_config(_sections(circus, {"web": {}, "worker": {"numprocesses": 2}}))
    arbiter = circus.start(config)
    before = {
        (name, wid): circus.reports.wait(name, wid)
        for name, wid in (("web", 1), ("worker", 1), ("worker", 2))
    }
    pids = arbiter.worker_pids()

    # A valid change (web: 3 processes) next to a bad value: nothing of it is applied.
    circus.write_config(_sections(circus, {
        "web": {"numprocesses": 3},
        "worker": {"numprocesses": "two"},
    }))
    _reload(arbiter, REFUSED)

    bad_line = circus.tmp.joinpath("circus.ini").read_text().splitlines().index(
        "numprocesses = two"
    ) + 1
    assert f"circus.ini:{bad_line}: [watcher:worker] numprocesses:" in arbiter.log()
    stays_equal(arbiter.worker_pids, 0.5, "the arbiter's processes")
    assert arbiter.running()
    assert arbiter.worker_pids() == pids
    assert circus.reports.wids("web") == [1]
    for (name, wid), report in before.items():
        assert alive(report["pid"])
        assert circus.reports.get(name, wid) == report

    # Still the old configuration, and still listening: a fixed file is applied.
    circus.write_config(_sections(circus, {"web": {"numprocesses": 3}, "worker": {}}))
    _reload(arbiter)
    circus.reports.wait("web", 3)
    assert alive(before["worker", 1]["pid"])
    wait_until(lambda: not alive(before["worker", 2]["pid"]), 5.0, "worker[2] to be stopped")


def test_sighup_restarts_a_given_up_watcher_whose_command_was_fixed(circus: Circus) -> None:
    keep = f"[watcher:keep]\ncmd = {report_command(circus.tmp, 'keep')}\n"
    broken = (
        "[watcher:fixme]\ncmd = {cmd}\nmax_retry = 1\nflapping.attempts = 2\n"
        "flapping.max_retry = 0\nbackoff_initial = 0.01\n"
    )
    config = circus.write_config(keep + broken.format(cmd="/bin/false"))
    arbiter = circus.start(config)
    kept = circus.reports.wait("keep", 1)
    arbiter.wait_log(r"fixme is flapping: gave up")

    circus.write_config(keep + broken.format(cmd=report_command(circus.tmp, "fixme")))
    arbiter.send(signal.SIGHUP)

    wait_until(
        lambda: circus.reports.get("fixme", 1) or not arbiter.running(),
        5.0,
        "the fixed watcher to start (or the arbiter to die)",
        arbiter.log_tail,
    )
    assert arbiter.running(), "the reload killed the arbiter"
    assert circus.reports.get("fixme", 1) is not None
    assert alive(kept["pid"])
