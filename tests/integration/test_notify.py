"""Readiness per process: each child's own NOTIFY_SOCKET, READY=1 gates start, the watchdog."""

from __future__ import annotations

import re

import pytest
from arbiter_harness import CHILD_PYTHON, CHILDREN, Circus, wait_until

pytestmark = pytest.mark.timeout(30)

NOTIFIER = f"{CHILD_PYTHON} -S -E {CHILDREN / 'notifier.py'}"


def position(log: str, pattern: str) -> int:
    match = re.search(pattern, log)
    assert match, f"{pattern!r} not in the log:\n{log}"
    return match.start()


def test_readiness_gates_start_and_after_orders_watchers(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:db]
        cmd = {NOTIFIER} 0.5 -1 0.2
        notify = true
        numprocesses = 2

        [watcher:web]
        cmd = {NOTIFIER} 0 -1 0.2
        notify = true
        priority = 10
        after = db
        """)
    arbiter = circus.start(config)
    log = arbiter.log()
    # web has the higher priority but comes after db: db's processes are ready first.
    ready_db = [m.start() for m in re.finditer(r"db\[\d\] pid \d+ ready", log)]
    assert len(ready_db) == 2
    assert max(ready_db) < position(log, r"web: starting")
    assert position(log, r"db: active") < position(log, r"web: starting")
    # The arbiter says it runs (READY=1 to systemd) only once every process is ready.
    assert position(log, r"web\[1\] pid \d+ ready") < position(log, "circus-sd running")


def test_a_child_that_stops_pinging_is_restarted(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:pinger]
        cmd = {NOTIFIER} 0 2 0.2
        notify = true
        watchdog_sec = 1
        """)
    arbiter = circus.start(config, "--log-level", "debug")
    first = arbiter.worker_pids()
    arbiter.wait_log(r"pinger\[1\] pid \d+ sent no WATCHDOG=1 for 1 s: restarting it", timeout=5)
    wait_until(lambda: arbiter.worker_pids() and arbiter.worker_pids() != first, 5,
               "a new pinger process", arbiter.log_tail)
    # systemd's watchdog signal: SIGABRT (-6), so the program may dump its state.
    assert re.search(r"pinger\[1\] pid \d+ stopped \(-6\)", arbiter.log())


def test_a_child_that_never_gets_ready_is_a_failed_start(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:mute]
        cmd = {NOTIFIER} 3600 0 1
        notify = true
        ready_timeout = 0.5
        backoff_initial = 0.2
        """)
    arbiter = circus.start(config)
    arbiter.wait_log(r"mute\[1\] pid \d+ not ready 0.5 s after its start: restarting it", 5)
    arbiter.wait_log(r"failed start 1\); restarting in", 5)
