"""Harness for the integration tests: a real `circus-sd` with real children under tmp_path.

Every wait has a deadline (`wait_until`), and the `circus` fixture guarantees that nothing
outlives a test: it stops every arbiter it started, then fails the test if any process that
belongs to it (its command line, working directory or environment mentions the test's
directory) is still alive, killing it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
CHILDREN = Path(__file__).resolve().parent / "children"
CIRCUS_SD = ROOT / ".venv" / "bin" / "circus-sd"
# The children's interpreter: the system one, so that `nobody` can run it too (the venv's
# interpreter lives under /root). -S -E: nothing from site or the environment changes it.
CHILD_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
POLL = 0.01
STOP_DEADLINE = 10.0



# linux/capability.h and linux/prctl.h
CAP_SYS_RESOURCE = 24
_PR_CAPBSET_DROP = 24


def drop_capability(capability: int) -> None:
    """Drop `capability` from this process's bounding set (in a child before exec: the program
    it executes, even as root, never has it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

class WaitTimeout(AssertionError):
    """A condition a test waited for did not come true before its deadline."""


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    detail: Callable[[], str] | None = None,
) -> T:
    """Re-check `predicate` every ~10 ms until it returns something true, and return that.

    Fails after `timeout` seconds, naming `what` was awaited (and `detail()`, if given).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:g} s waiting for {what}"
            if detail is not None:
                message += f"\n{detail()}"
            raise WaitTimeout(message)
        time.sleep(POLL)


def stays_equal(getter: Callable[[], T], duration: float, what: str) -> T:
    """Check, every ~10 ms for `duration` seconds, that `getter()` keeps its first value.

    The "nothing more happens" assertion: a deadline-bounded observation, not a synchronisation.
    """
    first = getter()
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        now = getter()
        assert now == first, f"{what} changed: {first!r} became {now!r}"
        time.sleep(POLL)
    return first


# -- processes -----------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def alive_process(process: psutil.Process) -> bool:
    """True if this very process (pid and start time) still runs and is not a zombie."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def gone(process: psutil.Process) -> bool:
    """True once this very process has exited (a reused pid does not count)."""
    return not alive_process(process)


def _mentions(process: psutil.Process, markers: list[str]) -> bool:
    texts: list[str] = []
    with contextlib.suppress(psutil.Error):
        texts.append("\0".join(process.cmdline()))
    with contextlib.suppress(psutil.Error):
        texts.append(process.cwd())
    with contextlib.suppress(psutil.Error):
        texts.append("\0".join(f"{k}={v}" for k, v in process.environ().items()))
    return any(marker in text for marker in markers for text in texts)


def processes_mentioning(markers: list[str]) -> list[psutil.Process]:
    """Live processes (not zombies, not us or our ancestors) that mention any marker."""
    ours = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for process in psutil.process_iter():
        if process.pid in ours:
            continue
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if _mentions(process, markers):
            found.append(process)
    return found


def describe(processes: list[psutil.Process]) -> str:
    lines = []
    for process in processes:
        try:
            lines.append(f"  pid {process.pid} ppid {process.ppid()}: {process.cmdline()}")
        except psutil.Error:
            lines.append(f"  pid {process.pid} (gone)")
    return "\n".join(lines)


# -- files written by children -------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON a child wrote atomically, or None if not there yet."""
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


class Reports:
    """What report.py children wrote into one directory."""

    def __init__(self, directory: Path, detail: Callable[[], str] | None = None) -> None:
        self.directory = directory
        # Called for the failure message of a wait: what else the test can tell (logs).
        self.detail = detail

    def get(self, name: str, wid: int) -> dict[str, Any] | None:
        return read_json(self.directory / f"{name}.{wid}.json")

    def wids(self, name: str) -> list[int]:
        """Worker ids that ever reported for watcher `name`."""
        return sorted(
            int(p.name[len(name) + 1 : -len(".json")])
            for p in self.directory.glob(f"{name}.*.json")
        )

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every report of watcher `name`, oldest first (complete lines only)."""
        try:
            text = (self.directory / f"{name}.spawns").read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.split("\n")[:-1]]

    def wait(
        self,
        name: str,
        wid: int,
        timeout: float = 5.0,
        not_pid: int | None = None,
        detail: Callable[[], str] | None = None,
    ) -> dict[str, Any]:
        """Wait for the report of `name`[wid] (from a process other than `not_pid`)."""

        def fresh() -> dict[str, Any] | None:
            report = self.get(name, wid)
            if report is None or report["pid"] == not_pid:
                return None
            return report

        what = f"a report from {name}[{wid}]"
        if not_pid is not None:
            what += f" by a process other than pid {not_pid}"
        return wait_until(fresh, timeout, what, detail or self.detail)


def child_command(script: str, outdir: Path, name: str, *options: str) -> str:
    """The `cmd` of a watcher running children/SCRIPT OUTDIR NAME $(circus.wid) OPTIONS."""
    words = [CHILD_PYTHON, "-S", "-E", str(CHILDREN / script), str(outdir), name]
    quoted = " ".join(shlex.quote(w) for w in words)
    tail = " ".join(shlex.quote(o) for o in options)
    return f"{quoted} $(circus.wid) {tail}".rstrip()


def report_command(outdir: Path, name: str, *options: str) -> str:
    """The `cmd` of a watcher running report.py."""
    return child_command("report.py", outdir, name, *options)


# -- the arbiter ---------------------------------------------------------------------------------


class Arbiter:
    """One `circus-sd` process, logging to a file."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path
        self.process = psutil.Process(popen.pid)
        self.stop_seconds: float | None = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "arbiter log (last lines):\n" + "\n".join(self.log().splitlines()[-lines:])

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log()))

    def wait_log(self, pattern: str, timeout: float = 5.0, count: int = 1) -> str:
        """Wait until the log holds `count` matches of the regex `pattern`; the last match."""

        def found() -> str | None:
            matches = re.findall(pattern, self.log())
            return matches[count - 1] if len(matches) >= count else None

        what = f"{count} log line(s) matching {pattern!r}"
        return wait_until(found, timeout, what, self.log_tail)

    def running(self) -> bool:
        return self.popen.poll() is None

    def send(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout(
                f"timed out after {timeout:g} s waiting for circus-sd (pid {self.pid}) to exit\n"
                + self.log_tail()
            ) from None

    def stop(self, timeout: float = STOP_DEADLINE) -> int:
        """SIGTERM, then wait for the exit; its status. Records how long the stop took."""
        started = time.monotonic()
        self.send(signal.SIGTERM)
        status = self.wait_exit(timeout)
        self.stop_seconds = time.monotonic() - started
        return status

    def workers(self) -> list[psutil.Process]:
        """The arbiter's live children except its spawner (a fork of itself)."""
        own = self.process.cmdline()
        found = []
        for child in self.process.children():
            try:
                if child.cmdline() != own and child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child)
            except psutil.Error:
                continue
        return found

    def worker_pids(self) -> set[int]:
        return {p.pid for p in self.workers()}


class Circus:
    """The per-test harness: writes configs, starts arbiters, and cleans up after the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.arbiters: list[Arbiter] = []
        self.markers = [str(tmp_path)]
        self.extra_dirs: list[Path] = []
        self.reports = self.reports_in(tmp_path)

    def reports_in(self, directory: Path) -> Reports:
        return Reports(directory, self.log_tails)

    def log_tails(self) -> str:
        return "\n".join(arbiter.log_tail() for arbiter in self.arbiters)

    def write_config(self, text: str, name: str = "circus.ini") -> Path:
        """Write a config; its control and event sockets go to tmp_path (never /run)."""
        text = textwrap.dedent(text).lstrip()
        endpoints = (
            f"endpoint = ipc://{self.tmp}/control.sock\n"
            f"pubsub_endpoint = ipc://{self.tmp}/events.sock\n"
        )
        header = re.search(r"^\[circus\][ \t]*\n", text, re.MULTILINE)
        if header is None:
            text = f"[circus]\n{endpoints}\n{text}"
        else:
            text = text[: header.end()] + endpoints + text[header.end() :]
        path = self.tmp / name
        path.write_text(text)
        return path

    def world_dir(self) -> Path:
        """A fresh directory every user may write to (tmp_path's parents are root's only).
        Sticky, as /tmp: the arbiter keeps sockets and logs only where nobody else can
        replace its entries (circus_sd/safe_paths.py)."""
        path = Path(tempfile.mkdtemp(prefix="circus-sd-it-"))
        path.chmod(0o1777)
        self.extra_dirs.append(path)
        self.markers.append(str(path))
        return path

    def run(
        self, *args: str, timeout: float = 10.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `circus-sd ARGS` to completion (for --check and refused starts)."""
        return subprocess.run(
            [str(CIRCUS_SD), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
            env=env,
            check=False,
        )

    def start(
        self,
        config: Path,
        *args: str,
        env: dict[str, str] | None = None,
        nofile: tuple[int, int] | None = None,
        running: bool = True,
        capped: bool = True,
    ) -> Arbiter:
        """Start `circus-sd CONFIG ARGS` in tmp_path; wait until it says it runs (unless not
        `running`: a test of its start-up). `nofile`: its RLIMIT_NOFILE, which it cannot raise
        past the hard limit unless not `capped`."""
        log_path = self.tmp / f"arbiter-{len(self.arbiters) + 1}.log"

        def limits() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
                # An administrator's cap: root without CAP_SYS_RESOURCE cannot raise it (a root
                # arbiter outside systemd raises its hard limit when it can).
                if capped:
                    drop_capability(CAP_SYS_RESOURCE)

        with open(log_path, "wb") as log, open(os.devnull, "rb") as stdin:
            popen = subprocess.Popen(
                [str(CIRCUS_SD), str(config), *args],
                stdin=stdin,
                stdout=log,
                stderr=log,
                cwd=self.tmp,
                env=env,
                preexec_fn=limits if nofile is not None else None,
            )
        arbiter = Arbiter(popen, log_path)
        self.arbiters.append(arbiter)
        if not running:
            return arbiter
        wait_until(
            lambda: "circus-sd running" in arbiter.log() or not arbiter.running(),
            10.0,
            "circus-sd to log that it is running",
            arbiter.log_tail,
        )
        assert arbiter.running(), f"circus-sd exited at start-up\n{arbiter.log_tail()}"
        return arbiter

    def leftovers(self) -> list[psutil.Process]:
        return processes_mentioning(self.markers)

    def cleanup(self) -> list[str]:
        """Stop every arbiter, kill what is left; the problems found, as messages."""
        problems = []
        for arbiter in self.arbiters:
            if not arbiter.running():
                continue
            try:
                status = arbiter.stop(STOP_DEADLINE)
            except WaitTimeout:
                arbiter.popen.kill()
                arbiter.popen.wait(5)
                problems.append(
                    f"circus-sd pid {arbiter.pid} did not exit within {STOP_DEADLINE:g} s "
                    "of SIGTERM and was SIGKILLed"
                )
                continue
            if status != 0:
                problems.append(f"circus-sd pid {arbiter.pid} exited {status} on SIGTERM")
        # Processes being killed by the arbiter's own shutdown may take an instant to vanish.
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: not self.leftovers(), 0.5, "the test's processes to be gone")
        left = self.leftovers()
        if left:
            problems.append("processes left behind after the arbiter stopped:\n" + describe(left))
            for process in left:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            psutil.wait_procs(left, timeout=5)
        for path in self.extra_dirs:
            shutil.rmtree(path, ignore_errors=True)
        return problems
