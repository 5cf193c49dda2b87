"""Stopping the arbiter: graceful timeout, order, process trees, nothing left behind."""

from __future__ import annotations

import contextlib
import functools
import re
import shlex
import signal
from pathlib import Path

import psutil
import pytest
from arbiter_harness import (
    Circus,
    alive,
    alive_process,
    child_command,
    gone,
    read_lines,
    report_command,
    wait_until,
)

# Each test takes a few seconds; this only bounds a hang.
pytestmark = pytest.mark.timeout(30)


def test_process_ignoring_sigterm_is_killed_after_graceful_timeout(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:stubborn]
        cmd = {report_command(circus.tmp, "stubborn", "--ignore-term")}
        graceful_timeout = 1
        """)
    arbiter = circus.start(config)
    stubborn = circus.reports.wait("stubborn", 1)

    status = arbiter.stop()

    assert status == 0
    assert arbiter.stop_seconds is not None
    assert 1.0 <= arbiter.stop_seconds <= 5.0, f"stop took {arbiter.stop_seconds:.2f} s"
    assert not alive(stubborn["pid"])
    assert re.search(r"stubborn\[1\] pid \d+ still running .*SIGKILL", arbiter.log())


def _kill_and_list(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running; killed, so that a failing test leaves nothing behind either."""
    left = [p for p in processes if alive_process(p)]
    for process in left:
        process.kill()
    return left


def test_sigterm_leaves_no_process_behind(circus: Circus) -> None:
    shell_script = (
        f"echo $$ >> {shlex.quote(str(circus.tmp / 'shells'))}; while true; do sleep 300; done"
    )
    config = circus.write_config(f"""
        [watcher:daemonizer]
        cmd = {child_command("daemonizer.py", circus.tmp, "daemonizer")}

        [watcher:shell]
        cmd = /bin/sh -c {shlex.quote(shell_script)}
        numprocesses = 2
        """)
    arbiter = circus.start(config)
    report = circus.reports.wait("daemonizer", 1)
    wait_until(
        lambda: len(read_lines(circus.tmp / "shells")) == 2, 5.0, "both shells to write their pid"
    )
    shells = [int(pid) for pid in read_lines(circus.tmp / "shells")]

    def sleep_of(pid: int) -> list[psutil.Process]:
        return [c for c in psutil.Process(pid).children() if c.name() == "sleep"]

    sleeps = [
        wait_until(functools.partial(sleep_of, p), 5.0, f"the sleep of shell {p}")[0]
        for p in shells
    ]
    daemon = psutil.Process(report["daemon"])
    # The daemon escaped its worker: orphaned, adopted by the arbiter (a child subreaper).
    assert daemon.ppid() == arbiter.pid
    everything = [psutil.Process(report["pid"]), daemon, *map(psutil.Process, shells), *sleeps]

    status = arbiter.stop()

    assert not _kill_and_list(everything), "still running after the arbiter exited"
    assert status == 0


def test_sigterm_leaves_no_child_of_a_daemon_behind(circus: Circus) -> None:
    # Killing the adopted daemon re-parents its child to the arbiter: it must be found too.
    config = circus.write_config(f"""
        [watcher:daemonizer]
        cmd = {child_command("daemonizer.py", circus.tmp, "daemonizer", "--with-child")}
        """)
    arbiter = circus.start(config)
    report = circus.reports.wait("daemonizer", 1)
    daemon = psutil.Process(report["daemon"])
    daemon_child = psutil.Process(report["daemon_child"])
    assert daemon_child.ppid() == daemon.pid

    status = arbiter.stop()

    assert not _kill_and_list([daemon, daemon_child]), "still running after the arbiter exited"
    assert status == 0


def test_watchers_start_by_priority_and_stop_in_reverse(circus: Circus) -> None:
    order = circus.tmp / "order"
    names = ("low", "high", "middle")
    priorities = {"low": 1, "high": 10, "middle": 5}
    sections = "\n".join(
        f"[watcher:{name}]\n"
        f"cmd = {report_command(circus.tmp, name, '--log-term', str(order))}\n"
        f"priority = {priorities[name]}\n"
        for name in names
    )
    # warmup_delay spaces the watchers' starts well beyond the 10 ms resolution of a process's
    # creation time, which then tells the order the arbiter started them in.
    config = circus.write_config("[circus]\nwarmup_delay = 0.2\n\n" + sections)
    arbiter = circus.start(config)
    born = {
        name: psutil.Process(circus.reports.wait(name, 1)["pid"]).create_time() for name in names
    }

    assert sorted(names, key=born.__getitem__) == ["high", "middle", "low"]
    wait_until(lambda: len(read_lines(order)) == 3, 5.0, "each child to set up its TERM handler")
    assert arbiter.stop() == 0
    assert read_lines(order)[3:] == ["stopped low", "stopped middle", "stopped high"]


def _terms(path: Path) -> dict[str, dict[str, int]]:
    """What tree.py processes recorded: {"TERM": {role: pid}, "done": {role: pid}}."""
    found: dict[str, dict[str, int]] = {"TERM": {}, "done": {}}
    for line in read_lines(path):
        what, role, pid = line.split()
        found[what][role] = int(pid)
    return found


def test_stop_children_signals_the_whole_tree(circus: Circus) -> None:
    # The worker takes 0.8 s to shut down: the arbiter waits for it, so its descendants have
    # time to record the signal whatever the arbiter does with them afterwards.
    config = circus.write_config(f"""
        [watcher:tree]
        cmd = {child_command("tree.py", circus.tmp, "tree", "0.8", "0")}
        stop_children = true
        graceful_timeout = 5
        """)
    arbiter = circus.start(config)
    report = circus.reports.wait("tree", 1)
    tree = [psutil.Process(pid) for pid in (report["pid"], *report["descendants"])]

    status = arbiter.stop()

    assert not _kill_and_list(tree), "still running after the arbiter exited"
    assert status == 0
    received = _terms(circus.tmp / "tree.term")["TERM"]
    assert sorted(received) == ["child", "grandchild", "worker"], "all three get SIGTERM"
    assert received["worker"] == report["pid"]
    assert sorted([received["child"], received["grandchild"]]) == report["descendants"]
    assert "SIGKILL" not in arbiter.log()


def test_stop_children_gives_descendants_the_graceful_timeout(circus: Circus) -> None:
    # The worker exits at once; its descendants need 0.3 s: they must not be SIGKILLed sooner.
    config = circus.write_config(f"""
        [watcher:tree]
        cmd = {child_command("tree.py", circus.tmp, "tree", "0", "0.3")}
        stop_children = true
        graceful_timeout = 5
        """)
    arbiter = circus.start(config)
    report = circus.reports.wait("tree", 1)
    tree = [psutil.Process(pid) for pid in (report["pid"], *report["descendants"])]

    status = arbiter.stop()
    left = _kill_and_list(tree)

    done = _terms(circus.tmp / "tree.term")["done"]
    assert sorted(done) == ["child", "grandchild", "worker"], "all three finish their shutdown"
    assert not left, "still running after the arbiter exited"
    assert status == 0


def test_stop_after_a_watcher_gave_up(circus: Circus) -> None:
    # A failed watcher is stopped too (no state-machine error), the others gracefully.
    program = circus.tmp / "bad-interpreter"
    program.write_text(f"#!{circus.tmp}/no-such-interpreter\n")
    program.chmod(0o755)
    order = circus.tmp / "order"
    config = circus.write_config(f"""
        [watcher:broken]
        cmd = {program}
        max_retry = 1

        [watcher:bystander]
        cmd = {report_command(circus.tmp, "bystander", "--log-term", str(order))}
        """)
    arbiter = circus.start(config)
    circus.reports.wait("bystander", 1)
    arbiter.wait_log(r"broken\[1\] could not start: .*giving up")

    status = arbiter.stop()

    assert "Traceback" not in arbiter.log()
    assert status == 0
    assert read_lines(order) == ["started bystander", "stopped bystander"]


def test_sigterm_during_start_up_stops_at_once(circus: Circus) -> None:
    # The first watcher (by priority) is never ready: the start waits up to its ready_timeout
    # before the next one. SIGTERM must not wait for that.
    config = circus.write_config("""
        [watcher:never_ready]
        cmd = sleep 1000
        ready_log_line = ready
        ready_timeout = 60
        priority = 10

        [watcher:next]
        cmd = sleep 1001
        """)
    arbiter = circus.start(config, running=False)

    def never_ready() -> list[psutil.Process]:
        found = []
        for process in arbiter.workers():
            with contextlib.suppress(psutil.Error):
                if process.cmdline() == ["sleep", "1000"]:
                    found.append(process)
        return found

    worker = wait_until(never_ready, 10.0, "the never-ready process", arbiter.log_tail)[0]

    arbiter.send(signal.SIGTERM)

    assert arbiter.wait_exit(5.0) == 0
    assert gone(worker)
    log = arbiter.log()
    assert "circus-sd running" not in log
    assert "next: starting" not in log


@pytest.mark.timeout(120)
def test_a_thousand_processes_stop_at_once_without_a_hang_or_a_traceback(circus: Circus) -> None:
    """1,000 children exiting together overflow asyncio's signal wakeup socket with SIGCHLD
    bytes. CPython then reported each failed write (hundreds of tracebacks on stderr), through a
    lock its signal handler could take again while held: about one stop in three hung for good."""
    config = circus.write_config("""
        [watcher:many]
        cmd = sleep 100000
        numprocesses = 1000
        """)
    for _round in range(3):
        arbiter = circus.start(config)
        wait_until(lambda a=arbiter: a.count(r"many: active") == 1, 60, "1000 processes",
                   arbiter.log_tail)
        children = psutil.Process(arbiter.pid).children()
        assert len(children) > 1000  # and the spawner
        arbiter.send(signal.SIGTERM)
        assert arbiter.wait_exit(20) == 0, arbiter.log_tail()
        assert "Exception ignored" not in arbiter.log(), arbiter.log_tail(20)
        assert not [c for c in children if alive_process(c)], "processes left behind"
