"""Work a hostile config or a stuck output could put on the event loop is bounded: a
backtracking `ready_log_line`, an arbiter log nobody reads, a `max_line` past its ceiling."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from arbiter_harness import (
    CHILD_PYTHON,
    CIRCUS_SD,
    Arbiter,
    Circus,
    WaitTimeout,
    alive,
    report_command,
    wait_until,
)
from control_helpers import (
    Clients,
    ControlClient,
    clients,
    control_endpoint,
    real_pids,
    wait_count,
)

from circus_sd.logging_setup import QUEUE_RECORDS

pytestmark = pytest.mark.timeout(60)

# A control request must be answered within this long while the loop is under attack.
REPLY_DEADLINE = 5.0


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


# -- ready_log_line ------------------------------------------------------------------------------

# Prints lines on which `^(a+)+$` backtracks for ages (2^40 ways to split 40 `a`s before the
# `b` says no), a long one too, then says it did and sleeps.
BACKTRACKER = """\
import os, sys, time
os.write(1, b"a" * 40 + b"b\\n")
os.write(1, b"a" * 200000 + b"b\\n")
os.write(1, b"a" * 45 + b"b\\n")
open(sys.argv[1], "w").close()
time.sleep(3600)
"""


def _backtracking_watcher(circus: Circus) -> tuple[Path, Path]:
    script = circus.tmp / "backtracker.py"
    script.write_text(BACKTRACKER)
    printed = circus.tmp / "printed"
    config = circus.write_config(f"""
        [watcher:evil]
        cmd = {CHILD_PYTHON} -S -E {script} {printed}
        ready_log_line = ^(a+)+$
        ready_timeout = 0
        """)
    return config, printed


def test_a_backtracking_ready_log_line_does_not_stop_the_arbiter(
    circus: Circus, zmq_clients: Clients
) -> None:
    """The search takes at most its CPU budget, then the process's output is no longer
    searched: control requests are answered meanwhile, and the process stays not ready."""
    config, printed = _backtracking_watcher(circus)
    arbiter = circus.start(config)
    wait_until(printed.exists, 10, "the child to print its lines", arbiter.log_tail)
    control = zmq_clients.control(control_endpoint(circus.tmp))
    for _ in range(3):
        reply = control.ok("status", timeout=REPLY_DEADLINE, name="evil")
        assert reply["status"] in ("active", "starting"), reply
    arbiter.wait_log(r"evil\[1\] pid \d+: searching its output for ready_log_line took", 10)
    assert "ready (ready_log_line)" not in arbiter.log()
    control.ok("status", timeout=REPLY_DEADLINE, name="evil")


def test_a_backtracking_ready_log_line_does_not_hold_sigterm(circus: Circus) -> None:
    config, printed = _backtracking_watcher(circus)
    arbiter = circus.start(config)
    wait_until(printed.exists, 10, "the child to print its lines", arbiter.log_tail)
    assert arbiter.stop(timeout=5.0) == 0


# -- the arbiter's own log -----------------------------------------------------------------------


def _full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is full: a blocking write to it waits until someone reads."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    for size in (65536, 4096, 512, 1):
        while True:
            try:
                os.write(write_end, b"#" * size)
            except BlockingIOError:
                break
    # Blocking again (the flag belongs to the pipe, which the arbiter shares).
    os.set_blocking(write_end, True)
    return read_end, write_end


class _Drain:
    """Reads a pipe in a thread from `start()` until EOF; what it read so far, as text."""

    def __init__(self, read_end: int, copy: Path) -> None:
        self.read_end = read_end
        self.copy = copy
        self.data = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        with open(self.copy, "ab") as copy:
            while chunk := os.read(self.read_end, 65536):
                self.data += chunk
                copy.write(chunk)
                copy.flush()

    def text(self) -> str:
        return bytes(self.data).decode(errors="replace")


def _start_on_stuck_stderr(circus: Circus, config: Path, *args: str) -> tuple[Arbiter, int]:
    """`circus-sd CONFIG ARGS` whose stdout and stderr are a full pipe; the arbiter and the
    pipe's read end. Its log is copied to the harness's log file once the test drains it."""
    read_end, write_end = _full_pipe()
    log_path = circus.tmp / "arbiter-stderr.log"
    with open(os.devnull, "rb") as stdin:
        popen = subprocess.Popen(
            [str(CIRCUS_SD), str(config), *args],
            stdin=stdin, stdout=write_end, stderr=write_end, cwd=circus.tmp,
        )
    os.close(write_end)
    arbiter = Arbiter(popen, log_path)
    circus.arbiters.append(arbiter)
    return arbiter, read_end


def _answering(control: ControlClient, arbiter: Arbiter) -> bool:
    assert arbiter.running(), "circus-sd exited"
    try:
        reply = control.request("status", timeout=0.5, name="w")
    except WaitTimeout:
        return False
    return reply.get("status") == "active"


def test_a_log_output_nobody_reads_does_not_stop_supervision(
    circus: Circus, zmq_clients: Clients
) -> None:
    """With stderr a full pipe: the arbiter starts, answers, replaces a killed worker; the
    records its log queue cannot hold are counted (`dstats`) and reported once it drains."""
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {report_command(circus.tmp, "w")}
        numprocesses = 2
        """)
    arbiter, read_end = _start_on_stuck_stderr(circus, config, "--log-level", "debug")
    drain = _Drain(read_end, arbiter.log_path)
    try:
        control = zmq_clients.control(control_endpoint(circus.tmp))
        wait_until(lambda: _answering(control, arbiter), 10, "status to answer `active`")
        victim = wait_count(arbiter, "w", 2, timeout=10)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(pids := real_pids(arbiter, "w")) == 2 and victim not in pids,
            10,
            f"a process to replace the killed pid {victim}",
        )
        control.ok("status", timeout=REPLY_DEADLINE, name="w")
        # A flood of records (each command is logged at debug): more than the queue holds.
        casts = 2 * QUEUE_RECORDS
        for _ in range(casts):
            control.request("list", cast=True)
        dropped = control.ok("dstats", timeout=REPLY_DEADLINE)["log_records_dropped"]
        assert dropped >= casts - QUEUE_RECORDS, dropped

        drain.start()
        notices = wait_until(
            lambda: _drop_notices(drain.text(), dropped), 10, f"{dropped} drops reported",
            lambda: drain.text()[-2000:],
        )
        text = drain.text()
        written = len(re.findall(r"command list", text))
        assert 0 < written < casts
        assert written + sum(notices) >= casts
        assert arbiter.stop(timeout=10) == 0
        drain.thread.join(5)
    finally:
        if arbiter.running():
            arbiter.popen.kill()
            arbiter.popen.wait(5)
        if not drain.thread.is_alive():
            os.close(read_end)


def _drop_notices(text: str, at_least: int) -> list[int] | None:
    counts = [int(n) for n in re.findall(r"(\d+) log records dropped", text)]
    return counts if sum(counts) >= at_least else None


def test_a_log_output_nobody_reads_does_not_hold_the_exit(
    circus: Circus, zmq_clients: Clients
) -> None:
    """SIGTERM with stderr still full: what is queued gets a bounded time, then the arbiter
    exits anyway (0), its processes stopped."""
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {report_command(circus.tmp, "w")}
        """)
    arbiter, read_end = _start_on_stuck_stderr(circus, config)
    try:
        control = zmq_clients.control(control_endpoint(circus.tmp))
        wait_until(lambda: _answering(control, arbiter), 10, "status to answer `active`")
        (worker,) = wait_count(arbiter, "w", 1, timeout=10)
        assert arbiter.stop(timeout=8) == 0
        wait_until(lambda: not alive(worker), 2, f"worker {worker} to be gone")
    finally:
        if arbiter.running():
            arbiter.popen.kill()
            arbiter.popen.wait(5)
        os.close(read_end)


# The arbiter's Python (the venv's), running `circus_sd.cli.main` with `_serve` raising.
FAILING_ARBITER = """
import sys
from circus_sd import cli

async def failing(arbiter, *_held_locks):
    cli.log.info("about to fail")
    raise RuntimeError("the arbiter failed")

cli._serve = failing
cli.main(sys.argv[1:])
"""

# Logging set up, its writer stuck writing a record to stderr (holding the handler's lock),
# then the interpreter's normal exit.
LOGGING_THEN_EXIT = """
import logging, time
from circus_sd import logging_setup
from circus_sd.config.model import ArbiterConfig

logging_setup.configure_logging(ArbiterConfig(), level="info", output="-")
logging.getLogger("circus_sd").info("one record")
(handler,) = logging_setup._writer.targets
deadline = time.monotonic() + 10
while handler.lock.acquire(blocking=False):
    handler.lock.release()
    assert time.monotonic() < deadline, "the writer never took the handler's lock"
    time.sleep(0.01)
"""


def _exit_on_stuck_stderr(circus: Circus, *args: str) -> tuple[int, str]:
    """Runs `python ARGS` with stdout and stderr a full pipe; its exit status, then what it
    wrote (the pipe drained once it has exited). Fails if it does not exit in time."""
    read_end, write_end = _full_pipe()
    drain = _Drain(read_end, circus.tmp / "stuck-stderr.log")
    with open(os.devnull, "rb") as stdin:
        popen = subprocess.Popen(
            [str(CIRCUS_SD.parent / "python"), *args],
            stdin=stdin, stdout=write_end, stderr=write_end, cwd=circus.tmp,
        )
    os.close(write_end)
    try:
        # FLUSH_TIMEOUT (2 s) for the stuck writer, plus start-up.
        status = popen.wait(15)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(5)
        drain.start()
        drain.thread.join(5)
        if not drain.thread.is_alive():
            os.close(read_end)
    return status, drain.text()


def test_a_failing_arbiter_exits_in_bounded_time_with_its_log_stuck(circus: Circus) -> None:
    """`_run` raises while stderr is a full pipe: the error is logged (queued) and the exit is
    the bounded one, not the interpreter's (its traceback and atexit flush would wait)."""
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {report_command(circus.tmp, "w")}
        """)
    script = circus.tmp / "failing_arbiter.py"
    script.write_text(FAILING_ARBITER)
    status, _ = _exit_on_stuck_stderr(circus, str(script), str(config))
    assert status == 1
    assert circus.reports.wids("w") == []


def test_a_failing_arbiter_logs_why(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {report_command(circus.tmp, "w")}
        """)
    script = circus.tmp / "failing_arbiter.py"
    script.write_text(FAILING_ARBITER)
    result = subprocess.run(
        [str(CIRCUS_SD.parent / "python"), str(script), str(config)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=circus.tmp, timeout=15,
    )
    assert result.returncode == 1, result.stderr
    assert "CRITICAL circus-sd failed: the arbiter failed" in result.stderr
    assert "RuntimeError: the arbiter failed" in result.stderr


def test_logging_exit_flush_is_bounded_with_its_output_stuck(circus: Circus) -> None:
    """Any interpreter exit (not only circus-sd's): logging's atexit flush would wait forever
    for the handler the writer is stuck in; the writer gets its bounded time instead."""
    status, _ = _exit_on_stuck_stderr(circus, "-c", LOGGING_THEN_EXIT)
    assert status == 0


# -- max_line ------------------------------------------------------------------------------------


def test_a_max_line_over_its_ceiling_is_refused(circus: Circus) -> None:
    config = circus.write_config("""
        [watcher:w]
        cmd = sleep 3600
        max_line = 1048577
        """)
    result = circus.run("--check", str(config))
    assert result.returncode == 78, result
    assert re.search(
        r"circus\.ini:\d+: \[watcher:w\] max_line: expected an integer <= 1048576",
        result.stderr,
    ), result.stderr
    config.write_text(config.read_text().replace("1048577", "1048576"))
    assert circus.run("--check", str(config)).returncode == 0
