"""Readiness per process: each child's own NOTIFY_SOCKET, READY=1 gates start, the watchdog."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from arbiter_harness import CHILD_PYTHON, CHILDREN, Circus, wait_until

from circus_sd.client import CircusClient

pytestmark = pytest.mark.timeout(30)

NOTIFIER = f"{CHILD_PYTHON} -S -E {CHILDREN / 'notifier.py'}"


def position(log: str, pattern: str) -> int:
    match = re.search(pattern, log)
    assert match, f"{pattern!r} not in the log:\n{log}"
    return match.start()


def test_readiness_gates_start_and_after_orders_watchers(circus: Circus) -> None:
    config = circus.write_config(f"""
        [circus]
        ready_wait = true

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
    # With ready_wait, the arbiter says it runs (READY=1 to systemd) once every process is ready.
    assert position(log, r"web\[1\] pid \d+ ready") < position(log, "circus-sd running")


def test_without_ready_wait_the_arbiter_is_ready_once_the_last_processes_run(
    circus: Circus,
) -> None:
    config = circus.write_config(f"""
        [watcher:db]
        cmd = {NOTIFIER} 0.3 -1 0.2
        notify = true

        [watcher:web]
        cmd = {NOTIFIER} 1.5 -1 0.2
        notify = true
        after = db
        """)
    arbiter = circus.start(config)
    # Start order still waits for db's readiness; READY=1 comes before web's, which comes later.
    log = arbiter.log()
    assert position(log, r"db\[1\] pid \d+ ready") < position(log, "circus-sd running")
    assert not re.search(r"web\[1\] pid \d+ ready", log)
    web = [p for p in arbiter.workers() if "1.5" in p.cmdline()]
    assert len(web) == 1
    arbiter.wait_log(r"web\[1\] pid \d+ ready \(READY=1\)", timeout=5)
    arbiter.wait_log(r"web: active", timeout=5)


def test_a_log_line_makes_a_process_ready(circus: Circus, tmp_path: Path) -> None:
    script = tmp_path / "server.sh"
    script.write_text(
        "#!/bin/sh\necho starting up\nsleep 0.5\necho \"listening on port $1\" >&2\n"
        "exec sleep 3600\n"
    )
    script.chmod(0o755)
    config = circus.write_config(f"""
        [circus]
        ready_wait = true

        [watcher:server]
        cmd = {script} 8$(circus.wid)
        numprocesses = 2
        ready_log_line = ^listening on port \\d+$

        [watcher:client]
        cmd = sleep 3600
        after = server
        """)
    arbiter = circus.start(config)
    log = arbiter.log()
    ready = [m.start() for m in re.finditer(r"server\[\d\] pid \d+ ready \(ready_log_line\)", log)]
    assert len(ready) == 2
    assert max(ready) < position(log, r"client: starting")
    assert max(ready) < position(log, "circus-sd running")
    # The line that made it ready still reaches the process's output as usual.
    assert re.search(r"server\[1\] listening on port 81", log), log


def test_a_process_whose_line_never_comes_is_a_failed_start(circus: Circus) -> None:
    config = circus.write_config("""
        [watcher:quiet]
        cmd = sleep 3600
        ready_log_line = ready
        ready_timeout = 0.5
        backoff_initial = 0.2
        """)
    arbiter = circus.start(config)
    arbiter.wait_log(r"quiet\[1\] pid \d+ not ready 0.5 s after its start: restarting it", 5)


def test_a_log_line_that_cannot_be_seen_is_a_config_error(circus: Circus) -> None:
    config = circus.write_config("""
        [watcher:direct]
        cmd = sleep 3600
        ready_log_line = ready
        close_child_stdout = true
        close_child_stderr = true
        """)
    result = circus.run("--check", str(config))
    assert result.returncode == 78
    assert re.search(r"circus.ini:\d+.*\[watcher:direct\].*ready_log_line.*use `notify`",
                     result.stderr), result.stderr


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


def test_status_shows_each_processs_readiness_and_status_text(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:db]
        cmd = {NOTIFIER} 0 -1 0.2
        notify = true
        numprocesses = 2

        [watcher:plain]
        cmd = sleep 3600
        """)
    circus.start(config)
    with CircusClient(f"ipc://{circus.tmp}/control.sock") as client:
        details = client.call("status", details=True)["details"]
    # notifier.py says READY=1 with STATUS=serving.
    processes = details["db"]["processes"]
    assert [(p["wid"], p["ready"], p["status"]) for p in processes] == [
        (1, True, "serving"), (2, True, "serving")
    ]
    assert sorted(p["pid"] for p in processes) == details["db"]["pids"]
    # Watchers that report no readiness carry no per-process list.
    assert "processes" not in details["plain"]
