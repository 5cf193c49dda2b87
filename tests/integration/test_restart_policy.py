"""Failing processes: flapping pauses and give-up, programs that cannot be executed."""

from __future__ import annotations

import os
import shlex
import signal

import pytest
from arbiter_harness import CHILD_PYTHON, CHILDREN, Circus, alive, report_command, stays_equal

# Each test takes a few seconds; this only bounds a hang.
pytestmark = pytest.mark.timeout(30)


def _count_lines(path: str) -> int:
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def test_crash_loop_is_paused_then_given_up(circus: Circus) -> None:
    runs = circus.tmp / "runs"
    script = f"echo run >> {shlex.quote(str(runs))}; exit 1"
    config = circus.write_config(f"""
        [watcher:crashy]
        cmd = /bin/sh -c {shlex.quote(script)}
        backoff_initial = 0.01
        flapping.attempts = 3
        flapping.window = 5
        flapping.retry_in = 0.5
        flapping.max_retry = 1

        [watcher:steady]
        cmd = {report_command(circus.tmp, "steady")}
        """)
    arbiter = circus.start(config)
    steady = circus.reports.wait("steady", 1)

    arbiter.wait_log(r"crashy\[1\].*crashy is flapping: paused 0\.5 s")
    arbiter.wait_log(r"crashy\[1\].*crashy is flapping: gave up", timeout=5.0)

    log = arbiter.log()
    assert log.index("flapping: paused") < log.index("gave up")
    assert arbiter.count("flapping: paused") == 1, "max_retry = 1: one pause only"
    # 3 failed starts make it flap, once before the pause and once after it.
    runs_after = stays_equal(lambda: _count_lines(str(runs)), 1.0, "the number of runs")
    assert runs_after == 6
    assert arbiter.running()
    assert alive(steady["pid"]), "the other watcher was affected"
    assert arbiter.worker_pids() == {steady["pid"]}


def _doomed_program(path: str, outdir: str) -> None:
    """An executable that runs report.py, to be deleted while the arbiter runs."""
    with open(path, "w") as f:
        report = CHILDREN / "report.py"
        f.write(f'#!/bin/sh\nexec {CHILD_PYTHON} -S -E {report} {outdir} doomed "$1"\n')
    os.chmod(path, 0o755)


def test_vanished_executable_is_given_up_after_max_retry(circus: Circus) -> None:
    program = str(circus.tmp / "doomed-program")
    _doomed_program(program, str(circus.tmp))
    config = circus.write_config(f"""
        [watcher:doomed]
        cmd = doomed $(circus.wid)
        executable = {program}
        max_retry = 2
        min_uptime = 0
        backoff_initial = 0.2

        [watcher:bystander]
        cmd = {report_command(circus.tmp, "bystander")}
        """)
    arbiter = circus.start(config)
    doomed = circus.reports.wait("doomed", 1)
    bystander = circus.reports.wait("bystander", 1)

    os.unlink(program)
    os.kill(doomed["pid"], signal.SIGKILL)

    arbiter.wait_log(
        r"doomed\[1\] could not start: .*doomed-program.*; restarting in 0\.[12]\d s"
    )
    arbiter.wait_log(
        r"doomed\[1\] could not start: .*doomed-program.*; giving up after 2 failures "
        r"\(max_retry = 2\)"
    )
    assert arbiter.count("could not start") == 2
    assert arbiter.running()
    assert len(circus.reports.history("doomed")) == 1
    assert alive(bystander["pid"]), "the other watcher was affected"
    stays_equal(arbiter.worker_pids, 0.5, "the arbiter's processes")
    assert arbiter.worker_pids() == {bystander["pid"]}


def test_exec_failure_in_the_child_is_given_up_after_max_retry(circus: Circus) -> None:
    # Executable at load time, but exec fails: its interpreter does not exist.
    program = circus.tmp / "bad-interpreter"
    program.write_text(f"#!{circus.tmp}/no-such-interpreter\n")
    program.chmod(0o755)
    config = circus.write_config(f"""
        [watcher:broken]
        cmd = {program}
        max_retry = 3
        backoff_initial = 0.05

        [watcher:bystander]
        cmd = {report_command(circus.tmp, "bystander")}
        """)
    arbiter = circus.start(config)
    bystander = circus.reports.wait("bystander", 1)

    arbiter.wait_log(
        r"broken\[1\] could not start: exec: No such file or directory \(errno 2\); "
        r"giving up after 3 failures \(max_retry = 3\)"
    )
    assert arbiter.count(r"broken\[1\] could not start: exec: .*; restarting in") == 2
    assert arbiter.running()
    assert alive(bystander["pid"])
    stays_equal(arbiter.worker_pids, 0.5, "the arbiter's processes")
    assert arbiter.worker_pids() == {bystander["pid"]}
