"""`circusctl reexec`: the arbiter re-executes itself in place and nothing it supervises notices.

Seen from the outside only: a real arbiter, real children, the real circusctl, the client
library, real files and sockets. Same pids and start times, output lines neither lost nor
duplicated nor cut, no connection refused, every control call answered, timers kept at their
deadlines, the operator's changes kept, a refused re-execution changing nothing, and the
re-execution that follows a failure of the arbiter's loop, within its budget.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from arbiter_harness import (
    CHILD_PYTHON,
    CHILDREN,
    ROOT,
    Circus,
    WaitTimeout,
    child_command,
    describe,
    gone,
    report_command,
    stays_equal,
    wait_until,
)
from background import Background
from control_helpers import ask

from circus_sd.client import CallError, CircusClient

# The main test takes about 15 s here, the others under 10 s each; this only bounds a hang.
pytestmark = pytest.mark.timeout(120)

CIRCUSCTL = ROOT / ".venv" / "bin" / "circusctl"
# What each control call of the test may take; the arbiter answers in milliseconds.
CALL_TIMEOUT = 5.0
REEXECUTED = r"re-executed \((.*?)\): circus-sd (\S+) took over (\d+) process\(es\) of (\d+)"


def endpoint(circus: Circus) -> str:
    return f"ipc://{circus.tmp}/control.sock"


def call(circus: Circus, command: str, **properties: Any) -> dict[str, Any]:
    """One call with a fresh client; asserts success (`status NAME` answers with the state)."""
    with CircusClient(endpoint(circus), CALL_TIMEOUT) as client:
        reply = client.call(command, **properties)
    assert reply.get("status") not in ("error", None), f"{command} {properties}: {reply}"
    return reply


def reexec(circus: Circus, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """`circusctl reexec`, the real one: it returns once the new program answers. Its
    --timeout also bounds that wait: the default 5 s, not the 20 s here, would be enough, but
    a switch under the main test's load took up to 2.3 s, and this machine is shared."""
    return subprocess.run(
        [str(CIRCUSCTL), "--endpoint", endpoint(circus), "--timeout", f"{timeout:g}", "reexec"],
        capture_output=True, text=True, timeout=timeout + 10, cwd=circus.tmp, check=False,
    )


def reexec_ok(circus: Circus) -> float:
    """`circusctl reexec`, which must exit 0; how long it took."""
    started = time.monotonic()
    result = reexec(circus)
    took = time.monotonic() - started
    assert result.returncode == 0, (
        f"circusctl reexec exited {result.returncode}: {result.stdout}{result.stderr}\n"
        + circus.log_tails()
    )
    return took


def generation(circus: Circus) -> int:
    return int(call(circus, "globaloptions")["options"]["generation"])


def pids_of(circus: Circus, names: list[str]) -> dict[str, list[int]]:
    return {name: sorted(call(circus, "list", name=name)["pids"]) for name in names}


def details(circus: Circus) -> dict[str, Any]:
    """`status --details`: per watcher its state, pids, counters and first start time."""
    return dict(call(circus, "status", details=True)["details"])


def start_times(circus: Circus) -> dict[str, dict[str, float]]:
    """`stats`: each process's start time, by watcher and pid."""
    infos = call(circus, "stats")["infos"]
    return {
        name: {pid: info["create_time"] for pid, info in processes.items()}
        for name, processes in infos.items()
    }


# -- 1. two hundred processes, twenty re-executions in a row -------------------------------------

SLEEPERS = 90  # per watcher, two watchers
WRITERS = 10
# Lines a second of each writer. At full speed ten writers put 68 million lines (5.7 GB) into
# their files during the twenty switches here, and checking them took a minute. At this rate a
# switch's stall (0.25 s and more) still fills every writer's pipe (64 KiB) and blocks it: the
# case that matters. Then it writes as fast as it can until it catches up with its schedule.
WRITER_RATE = 10000
SERVERS = 4
SWITCHES = 20


def writer_line(wid: int, seq: int) -> bytes:
    """Line SEQ of writers[WID] (children/reexec_writer.py)."""
    return b"writers %d %d %s\n" % (wid, seq, b"p" * (40 + seq % 61))


def writer_output(wid: int, count: int) -> bytes:
    return b"".join(writer_line(wid, seq) for seq in range(count))


def lines_sent(path: Path) -> int:
    """What a writer said it wrote, once it exited."""
    def said() -> str | None:
        return path.read_text() if path.exists() else None

    return int(wait_until(said, 10.0, f"{path}"))


def wait_size(path: Path, size: int) -> None:
    wait_until(lambda: path.stat().st_size >= size, 10.0, f"{size} bytes in {path}")


def first_difference(found: bytes, expected: bytes) -> str:
    """Where a writer's file departs from what it wrote, for the failure message."""
    index = next(
        (i for i in range(min(len(found), len(expected))) if found[i] != expected[i]),
        min(len(found), len(expected)),
    )
    start = found.rfind(b"\n", 0, index) + 1
    line = found.count(b"\n", 0, index) + 1
    return (
        f"{len(found)} bytes, {len(expected)} expected; first difference at byte {index}, "
        f"line {line}: found {found[start:index + 80]!r}, "
        f"expected {expected[start:index + 80]!r}"
    )


class Connections(Background):
    """Connects to the shared socket in a loop; counts the connections that failed."""

    def __init__(self, address: tuple[str, int], servers: set[int]) -> None:
        super().__init__("connections")
        self.address = address
        self.servers = servers
        self.answered = 0
        self.failed: list[str] = []

    def loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                pid = ask(self.address, timeout=CALL_TIMEOUT)
            except (OSError, ValueError) as exc:  # refused, reset, timed out, no answer
                self.failed.append(f"{type(exc).__name__}: {exc}")
            else:
                if pid in self.servers:
                    self.answered += 1
                else:
                    self.failed.append(f"answered by pid {pid}, not one of the servers")
            # Paced a little: the two cores are shared with the arbiter and its writers.
            stop.wait(0.005)


class ControlCalls(Background):
    """Calls `status` and `list` through the client library in a loop; counts those that got
    no answer."""

    def __init__(self, endpoint: str, path: Path) -> None:
        super().__init__("control calls")
        self.endpoint = endpoint
        self.path = path
        self.answered = 0
        self.retried = 0
        self.unanswered: list[str] = []

    def loop(self, stop: threading.Event) -> None:
        client = CircusClient(self.endpoint, CALL_TIMEOUT)
        try:
            while not stop.is_set():
                command = ("status", "list")[(self.answered + self.retried) % 2]
                try:
                    reply = client.call(command)
                except CallError:
                    # A request sent while the old program closes its endpoint is lost with
                    # that connection (README, Live upgrade): retried ONCE, with a fresh client,
                    # as soon as the new program's socket is there (within the same timeout).
                    self.retried += 1
                    client.close()
                    client = CircusClient(self.endpoint, CALL_TIMEOUT)
                    try:
                        wait_until(self.path.exists, CALL_TIMEOUT, f"{self.path} to be bound")
                        reply = client.call(command)
                    except (CallError, WaitTimeout) as exc:
                        self.unanswered.append(f"{command}: {exc}")
                        continue
                if reply.get("status") != "ok":
                    self.unanswered.append(f"{command}: {reply}")
                    continue
                self.answered += 1
        finally:
            client.close()


def test_twenty_reexecs_of_two_hundred_processes_lose_nothing(circus: Circus) -> None:
    began = time.monotonic()
    writer = child_command("reexec_writer.py", circus.tmp, "writers", str(WRITER_RATE))
    server = f"{CHILD_PYTHON} -S -E {CHILDREN / 'acceptor.py'} {circus.tmp} web $(circus.wid)"
    config = circus.write_config(f"""
        [socket:web]
        host = 127.0.0.1
        port = 0

        [watcher:sleep_a]
        cmd = /bin/sleep 3600
        numprocesses = {SLEEPERS}

        [watcher:sleep_b]
        cmd = /bin/sleep 3600
        numprocesses = {SLEEPERS}

        [watcher:writers]
        cmd = {writer}
        numprocesses = {WRITERS}
        stdout_stream.class = FileStream
        stdout_stream.filename = {circus.tmp}/writers.$(circus.wid).log

        [watcher:web]
        cmd = {server} fd:$(circus.sockets.web)
        use_sockets = true
        numprocesses = {SERVERS}
        """)
    arbiter = circus.start(config)
    names = ["sleep_a", "sleep_b", "writers", "web"]
    counts = {"sleep_a": SLEEPERS, "sleep_b": SLEEPERS, "writers": WRITERS, "web": SERVERS}
    wait_until(
        lambda: {n: len(p) for n, p in pids_of(circus, names).items()} == counts
        and len(arbiter.worker_pids()) == sum(counts.values()),
        20.0, "every process to run", circus.log_tails,
    )
    for wid in range(1, SERVERS + 1):
        circus.reports.wait("web", wid, timeout=10.0)
    running = time.monotonic()
    before = pids_of(circus, names)
    before_details = details(circus)
    before_times = start_times(circus)
    kernel_view = arbiter.worker_pids()
    assert kernel_view == {pid for pids in before.values() for pid in pids}
    port = next(s for s in call(circus, "listsockets")["sockets"] if s["name"] == "web")["port"]

    connections = Connections(("127.0.0.1", int(port)), set(before["web"]))
    calls = ControlCalls(endpoint(circus), circus.tmp / "control.sock")
    connections.start()
    calls.start()
    try:
        # Both loops are under way before the first switch.
        wait_until(lambda: connections.answered > 0 and calls.answered > 0, 10.0,
                   "the load threads' first answers")
        took = [reexec_ok(circus) for _ in range(SWITCHES)]
        # Still served after the last one.
        served, answered = connections.answered, calls.answered
        wait_until(lambda: connections.answered > served and calls.answered > answered, 10.0,
                   "answers after the last switch")
    finally:
        stopped = connections.stop() and calls.stop()
    assert stopped, "a load thread did not stop within its deadline"
    switched = time.monotonic()

    assert generation(circus) == SWITCHES
    assert arbiter.running()
    assert arbiter.count(REEXECUTED) == SWITCHES
    after = pids_of(circus, names)
    assert after == before
    assert details(circus) == before_details
    assert start_times(circus) == before_times
    assert arbiter.worker_pids() == kernel_view
    assert connections.problems == [] and calls.problems == []
    assert connections.failed == [], (
        f"{len(connections.failed)} of {connections.answered + len(connections.failed)} "
        f"connections failed: {connections.failed[:5]}"
    )
    assert calls.unanswered == [], (
        f"{len(calls.unanswered)} control calls got no answer ({calls.retried} retried): "
        f"{calls.unanswered[:5]}"
    )
    dropped = call(circus, "stats", name="writers")["dropped"]

    # The writers, stopped cleanly (each ends its batch and says how many lines it wrote),
    # then every file compared, byte for byte, with what its writer wrote.
    call(circus, "stop", name="writers", waiting=True)
    sent = {wid: lines_sent(circus.tmp / f"writers.{wid}.sent") for wid in range(1, WRITERS + 1)}
    for wid, count in sent.items():
        expected = writer_output(wid, count)
        path = circus.tmp / f"writers.{wid}.log"
        # The arbiter reads what was left in the pipe, then writes it: bounded.
        with contextlib.suppress(WaitTimeout):  # what is missing is described below
            wait_size(path, len(expected))
        found = path.read_bytes()
        assert found == expected, f"writers[{wid}]: " + first_difference(found, expected)
    assert dropped == {"lines": 0, "bytes": 0}, f"writers' output dropped: {dropped}"
    lines = sum(sent.values())
    print(
        f"\n{SWITCHES} reexecs of {sum(counts.values())} processes: "
        f"circusctl reexec took {min(took):.2f}-{max(took):.2f} s "
        f"(median {sorted(took)[len(took) // 2]:.2f} s); {lines} lines written by "
        f"{WRITERS} writers, {connections.answered} connections served, "
        f"{calls.answered} control calls answered ({calls.retried} retried once); "
        f"start {running - began:.1f} s, switches and load {switched - running:.1f} s, "
        f"checks {time.monotonic() - switched:.1f} s"
    )


# -- 2. deadlines kept -----------------------------------------------------------------------------

# How late a timer of the new program may fire, on this shared 2-core machine: the loop's
# latency and, for a restart, a child interpreter's start (tens of ms when idle, a few hundred
# under load). The failures it must tell apart are well outside it: a timer fired at the resume
# (3 s early and more below), re-armed for its whole delay at the resume (1 s into it, plus the
# switch: 1.2 s late and more), or lost. Each test checks that its switch ended early enough
# for the difference to show.
LATE = 0.75


def stamps(circus: Circus, name: str, what: str) -> list[tuple[int, float]]:
    """(pid, CLOCK_MONOTONIC) of each `what` (start, term) noted by children/reexec_stamp.py."""
    try:
        text = (circus.tmp / f"{name}.stamps").read_text()
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        kind, pid, when = line.split()
        if kind == what:
            found.append((int(pid), float(when)))
    return found


def wait_stamps(circus: Circus, name: str, what: str, count: int, timeout: float) -> list[
    tuple[int, float]
]:
    def enough() -> list[tuple[int, float]] | None:
        found = stamps(circus, name, what)
        return found if len(found) >= count else None

    return wait_until(enough, timeout, f"{count} {what} stamp(s) of {name}", circus.log_tails)


def sleep_until(when: float) -> None:
    """The test's own schedule (re-executing N s into a delay), not a wait for an event."""
    time.sleep(max(0.0, when - time.monotonic()))


def test_a_restart_in_backoff_comes_when_planned(circus: Circus) -> None:
    stamp = child_command("reexec_stamp.py", circus.tmp, "flaky", "fail-once")
    config = circus.write_config(f"""
        [watcher:flaky]
        cmd = {stamp}
        backoff_initial = 6
        check_flapping = false
        """)
    arbiter = circus.start(config)
    # The first process exits at once: a failed start, restarted after backoff_initial ±10 %.
    delay = float(arbiter.wait_log(r"restarting in (\d+\.\d+) s"))
    ((first, started),) = wait_stamps(circus, "flaky", "start", 1, 5.0)
    sleep_until(started + 1.5)
    reexec_ok(circus)
    switched = time.monotonic()
    assert switched < started + delay - LATE, (
        f"the switch ended {switched - started:.2f} s after the failed start: too late to tell "
        f"a kept deadline ({delay} s) from one re-armed at the resume"
    )
    assert generation(circus) == 1

    (_, (second, restarted)) = wait_stamps(circus, "flaky", "start", 2, delay + 5.0)
    # The timer started once the exit was seen, after the child's stamp: never before `delay`.
    # (The log rounds the delay to 10 ms.)
    assert delay - 0.01 <= restarted - started <= delay + LATE, (
        f"restarted {restarted - started:.3f} s after the failed start; planned in {delay} s"
    )
    assert second != first
    # Once, not twice: the new process stays, nothing else is started.
    stays_equal(lambda: len(stamps(circus, "flaky", "start")), 1.0, "the starts of flaky")
    assert call(circus, "list", name="flaky")["pids"] == [second]
    assert arbiter.worker_pids() == {second}
    assert details(circus)["flaky"]["restarts"] == 1


def test_a_graceful_stop_kills_at_its_deadline(circus: Circus) -> None:
    stamp = child_command("reexec_stamp.py", circus.tmp, "stubborn", "hold-term")
    config = circus.write_config(f"""
        [watcher:stubborn]
        cmd = {stamp}
        graceful_timeout = 4
        """)
    arbiter = circus.start(config)
    ((pid, _),) = wait_stamps(circus, "stubborn", "start", 1, 5.0)
    # Opened while it runs: tells its end apart from a reused pid, and when that end came.
    pidfd = os.pidfd_open(pid)
    try:
        call(circus, "stop", name="stubborn")  # without waiting: the reply comes at once
        ((_, termed),) = wait_stamps(circus, "stubborn", "term", 1, 5.0)
        sleep_until(termed + 1.0)
        reexec_ok(circus)
        switched = time.monotonic()
        assert switched < termed + 4.0 - LATE, (
            f"the switch ended {switched - termed:.2f} s after SIGTERM: too late to tell a kept "
            "deadline from one re-armed at the resume"
        )
        readable, _, _ = select.select([pidfd], [], [], 10.0)
        killed = time.monotonic()
    finally:
        os.close(pidfd)
    assert readable, f"stubborn (pid {pid}) still runs 10 s later\n{arbiter.log_tail()}"
    # SIGTERM was sent just before the child noted it (its handler's latency, milliseconds):
    # the SIGKILL comes 4 s after that.
    assert 4.0 - 0.2 <= killed - termed <= 4.0 + LATE, (
        f"SIGKILL {killed - termed:.3f} s after SIGTERM; graceful_timeout is 4 s"
    )
    wait_until(lambda: details(circus)["stubborn"]["state"] == "stopped", 5.0,
               "stubborn to be stopped", circus.log_tails)
    assert call(circus, "status", name="stubborn")["status"] == "stopped"
    assert call(circus, "list", name="stubborn")["pids"] == []
    # SIGTERM once: the new program did not start the stop again.
    assert len(stamps(circus, "stubborn", "term")) == 1
    assert generation(circus) == 1


# -- 3. the operator's changes kept ------------------------------------------------------------


def snapshot(circus: Circus, names: list[str]) -> dict[str, Any]:
    """What the operator sees: options, numprocesses, list and status."""
    def keep(reply: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in reply.items() if k not in ("time", "id")}

    return {
        "list": keep(call(circus, "list")),
        "status": keep(call(circus, "status")),
        "details": details(circus),
        "numprocesses": keep(call(circus, "numprocesses")),
        "numwatchers": keep(call(circus, "numwatchers")),
        **{f"options {n}": keep(call(circus, "options", name=n)) for n in names},
        **{f"numprocesses {n}": keep(call(circus, "numprocesses", name=n)) for n in names},
        **{f"list {n}": keep(call(circus, "list", name=n)) for n in names},
        **{f"status {n}": keep(call(circus, "status", name=n)) for n in names},
    }


def test_the_operators_changes_are_kept(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:tuned]
        cmd = {report_command(circus.tmp, "tuned")}

        [watcher:grown]
        cmd = {report_command(circus.tmp, "grown")}
        numprocesses = 2

        [watcher:removed]
        cmd = {report_command(circus.tmp, "removed")}

        [watcher:halted]
        cmd = {report_command(circus.tmp, "halted")}
        """)
    arbiter = circus.start(config)
    for name, wid in (("tuned", 1), ("grown", 1), ("grown", 2), ("removed", 1), ("halted", 1)):
        circus.reports.wait(name, wid)
    call(circus, "set", name="tuned", options={"graceful_timeout": 7, "max_age": 3600},
         waiting=True)
    call(circus, "incr", name="grown", waiting=True)
    call(circus, "rm", name="removed", waiting=True)
    call(circus, "add", name="added", cmd=report_command(circus.tmp, "added"), start=True,
         waiting=True)
    call(circus, "stop", name="halted", waiting=True)
    circus.reports.wait("grown", 3)
    circus.reports.wait("added", 1)
    names = ["tuned", "grown", "halted", "added"]
    wait_until(lambda: len(arbiter.worker_pids()) == 5, 5.0, "five processes", circus.log_tails)
    before = snapshot(circus, names)
    assert before["options tuned"]["options"]["graceful_timeout"] == 7
    assert before["numprocesses grown"]["numprocesses"] == 3
    assert sorted(before["list"]["watchers"]) == sorted(names)
    assert before["status halted"]["status"] == "stopped"
    pids = arbiter.worker_pids()

    reexec_ok(circus)

    assert generation(circus) == 1
    assert snapshot(circus, names) == before
    assert arbiter.worker_pids() == pids
    took_over = re.findall(REEXECUTED, arbiter.log())
    assert took_over == [("asked by circusctl reexec", took_over[0][1], "5", "4")]
    # The running configuration, not the file: nothing was started again, nothing came back.
    assert circus.reports.wids("removed") == [1]
    for name in ("tuned", "grown", "halted", "added"):
        assert len(circus.reports.history(name)) == {"grown": 3}.get(name, 1)


# -- 4. a refused re-execution, then an upgrade ---------------------------------------------------


def test_a_refused_reexec_changes_nothing_and_an_upgrade_goes_through(circus: Circus) -> None:
    # The arbiter runs circus_sd from a copy (first on its PYTHONPATH, with the venv's python
    # of .venv/bin/circus-sd): what `reexec` runs next is the copy, edited below as an
    # upgrade would replace the installed files. No bytecode: an edit of the same size within
    # the same second as the first import would not be seen.
    package = circus.tmp / "installed" / "circus_sd"
    shutil.copytree(ROOT / "circus_sd", package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        **os.environ,
        "PYTHONPATH": str(package.parent),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    config = circus.write_config(f"""
        [watcher:app]
        cmd = {report_command(circus.tmp, "app")}
        numprocesses = 3
        """)
    arbiter = circus.start(config, env=env)
    reports = [circus.reports.wait("app", wid) for wid in (1, 2, 3)]
    pids = sorted(r["pid"] for r in reports)
    options = call(circus, "globaloptions")["options"]
    assert (options["generation"], options["version"]) == (0, "0.1.0")

    handover = package / "handover.py"
    original = handover.read_text()
    assert "\nHANDOVER_VERSION = 1\n" in original
    handover.write_text(original.replace("\nHANDOVER_VERSION = 1\n", "\nHANDOVER_VERSION = 2\n"))
    refused = reexec(circus)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert "reexec refused" in said and "version 1" in said and "version 2" in said, said
    assert arbiter.running()
    assert generation(circus) == 0
    assert sorted(call(circus, "list", name="app")["pids"]) == pids
    assert arbiter.worker_pids() == set(pids)
    assert arbiter.count(r"re-executing") == 0

    # The real upgrade: the format this program writes, a new version of the code.
    handover.write_text(original)
    init = package / "__init__.py"
    text = init.read_text()
    version = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    assert version is not None and version.group(1) == "0.1.0"
    init.write_text(text.replace(version.group(0), '__version__ = "0.1.0+upgraded"'))
    reexec_ok(circus)
    options = call(circus, "globaloptions")["options"]
    assert (options["generation"], options["version"]) == (1, "0.1.0+upgraded")
    assert sorted(call(circus, "list", name="app")["pids"]) == pids
    assert arbiter.worker_pids() == set(pids)
    assert arbiter.count(r"took over 3 process\(es\) of 1 watcher") == 1
    assert [len(circus.reports.history("app"))] == [3]


# -- 5. commands at work, and signals, at the moment of the switch -----------------------------


def test_a_reexec_waits_for_a_reload_at_work_and_cuts_nothing(circus: Circus) -> None:
    stamp = child_command("reexec_stamp.py", circus.tmp, "old", "hold-term")
    keep = report_command(circus.tmp, "keep")
    both = f"""
        [watcher:old]
        cmd = {stamp}
        graceful_timeout = 3

        [watcher:keep]
        cmd = {keep}
        """
    config = circus.write_config(both)
    arbiter = circus.start(config)
    wait_stamps(circus, "old", "start", 1, 5.0)
    kept = circus.reports.wait("keep", 1)["pid"]

    # The operator removes `old` and adds `new`: the reload stops `old` for 3 s (it holds
    # SIGTERM), then starts `new`. A package upgrade's reexec comes meanwhile.
    added = report_command(circus.tmp, "new")
    circus.write_config(f"""
        [watcher:keep]
        cmd = {keep}

        [watcher:new]
        cmd = {added}
        """)
    call(circus, "reloadconfig")  # without waiting: the reply comes at once, the work goes on
    wait_stamps(circus, "old", "term", 1, 5.0)
    refused = reexec(circus)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert "reexec refused: reloadconfig in progress" in said, said
    assert generation(circus) == 0

    # Once the reload is done (old gone after its SIGKILL, new running), the reexec goes.
    circus.reports.wait("new", 1, timeout=10.0)
    wait_until(lambda: sorted(call(circus, "list")["watchers"]) == ["keep", "new"], 5.0,
               "the reload to be applied", arbiter.log_tail)
    reexec_ok(circus)
    assert generation(circus) == 1
    assert sorted(call(circus, "list")["watchers"]) == ["keep", "new"]
    assert call(circus, "list", name="keep")["pids"] == [kept]
    assert len(circus.reports.history("new")) == 1


@pytest.mark.parametrize("delay", [None, 0.0, 0.03, 0.08, 0.15, 0.3])
def test_sigterm_at_any_moment_of_a_switch_stops_everything(
    circus: Circus, delay: float | None
) -> None:
    # SIGTERM during the check (None), or `delay` after the arbiter logs "re-executing": in
    # the quiet, the execve, the new program's start, or after it. Wherever it lands, the
    # arbiter stops its processes and exits 0; a signal lost in the switch would leave it
    # running.
    config = circus.write_config(f"""
        [watcher:app]
        cmd = {report_command(circus.tmp, "app")}
        numprocesses = 3
        """)
    arbiter = circus.start(config)
    children = [psutil.Process(circus.reports.wait("app", wid)["pid"]) for wid in (1, 2, 3)]
    asking = subprocess.Popen(
        [str(CIRCUSCTL), "--endpoint", endpoint(circus), "--timeout", "10", "reexec"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=circus.tmp,
    )
    try:
        if delay is not None:
            arbiter.wait_log("re-executing circus-sd", timeout=10.0)
            time.sleep(delay)  # the moment under test, not a wait for something to happen
        arbiter.send(signal.SIGTERM)
        status = arbiter.wait_exit(15.0)
    finally:
        asking.kill()
        asking.wait(5)
    assert status == 0, arbiter.log_tail()
    assert all(gone(child) for child in children), describe(children)
    if delay is None:
        assert arbiter.count("re-executing") == 0, "stopped before any switch began"


# -- 6. a failure of the arbiter's loop -----------------------------------------------------------

AFTER_FAILURE = r"re-executing circus-sd \(after a failure of the arbiter\); every process stays"


def test_a_failure_of_the_loop_reexecutes_three_times_a_minute_then_exits(
    circus: Circus,
) -> None:
    config = circus.write_config(f"""
        [watcher:app]
        cmd = {report_command(circus.tmp, "app")}
        numprocesses = 3
        """)
    env = {**os.environ, "CIRCUS_SD_INJECT_FAULT": "reload"}
    arbiter = circus.start(config, env=env)
    reports = [circus.reports.wait("app", wid) for wid in (1, 2, 3)]
    pids = {r["pid"] for r in reports}
    for failure in (1, 2, 3):
        arbiter.send(signal.SIGHUP)  # raises in the loop (CIRCUS_SD_INJECT_FAULT=reload)
        arbiter.wait_log(REEXECUTED, timeout=15.0, count=failure)
        assert arbiter.count(AFTER_FAILURE) == failure
        assert arbiter.count(r"injected fault at reload") >= failure
        # The new program binds its endpoint in its first turn, after the log line above.
        wait_until(lambda: (circus.tmp / "control.sock").exists(), 5.0, "the control socket")
        assert generation(circus) == failure
        assert set(call(circus, "list", name="app")["pids"]) == pids
        assert arbiter.worker_pids() == pids
        assert arbiter.running()
    took_over = re.findall(REEXECUTED, arbiter.log())
    assert [(t[0], t[2], t[3]) for t in took_over] == [
        ("after a failure of the arbiter", "3", "1")
    ] * 3

    # The fourth within a minute: the arbiter exits as it did before re-executions existed,
    # stopping everything.
    children = [psutil.Process(pid) for pid in pids]
    arbiter.send(signal.SIGHUP)
    status = arbiter.wait_exit(20.0)
    assert status != 0, arbiter.log_tail()
    assert arbiter.count(r"failed 3 times within 60 s: exiting") == 1, arbiter.log_tail()
    assert arbiter.count(AFTER_FAILURE) == 3
    wait_until(lambda: all(gone(p) for p in children), 5.0, "the arbiter's children to end")
    wait_until(lambda: not circus.leftovers(), 5.0, "no process of the test left",
               lambda: describe(circus.leftovers()))
