"""Processes the harness starts: launch, exit events, CPU and memory accounting, cleanup by pid."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence

import psutil

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphans of what we start (a daemon killed before its children) come back to us to kill."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class Daemon:
    """A supervisor started by the harness, in its own session, output to a log file."""

    def __init__(self, argv: Sequence[str], log_path: str, env: dict[str, str] | None = None):
        self.argv = list(argv)
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.started = time.monotonic()
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
            )
        self.pid = self.popen.pid
        self._pidfd = os.pidfd_open(self.pid)
        self.exited: float | None = None

    def wait_exit(self, timeout: float) -> bool:
        """Block until the daemon exits (pidfd readable: exact, no polling) or `timeout` passes."""
        if self.exited is None:
            ready, _, _ = select.select([self._pidfd], [], [], max(timeout, 0))
            if not ready:
                return False
            self.exited = time.monotonic()
        self.popen.wait()
        return True

    def poll_exit(self) -> bool:
        return self.wait_exit(0)

    def helpers(self) -> list[int]:
        """Direct children that are the daemon's own (same cmdline: e.g. circus-sd's spawner)."""
        try:
            me = psutil.Process(self.pid)
            own = me.cmdline()
            return [c.pid for c in me.children() if _cmdline(c.pid) == own]
        except psutil.Error:
            return []

    def children(self) -> set[int]:
        """The daemon's child pids, zombies included, from /proc (one read per thread)."""
        found: set[int] = set()
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                with contextlib.suppress(OSError), open(
                    f"/proc/{self.pid}/task/{tid}/children"
                ) as f:
                    found.update(int(p) for p in f.read().split())
        return found

    def tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 8192))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        os.close(self._pidfd)


def _cmdline(pid: int) -> list[str] | None:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return None


# -- accounting ----------------------------------------------------------------------------------


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time of the processes, in seconds, at nanosecond resolution (schedstat of each thread).

    /proc/PID/stat's utime+stime tick at 10 ms, too coarse for an idle supervisor; schedstat's
    first field is the thread's run time in ns. Threads that died meanwhile are not counted.
    """
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError), open(
                    f"/proc/{pid}/task/{tid}/schedstat"
                ) as f:
                    total += int(f.read().split()[0])
    return total / 1e9


def cpu_ticks_seconds(pids: Iterable[int]) -> float:
    """utime+stime from /proc/PID/stat (10 ms ticks, dead threads included): a cross-check."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


@dataclasses.dataclass(frozen=True)
class Memory:
    rss: int
    pss: int
    uss: int


def memory(pid: int) -> Memory | None:
    try:
        full = psutil.Process(pid).memory_full_info()
    except psutil.Error:
        return None
    return Memory(full.rss, getattr(full, "pss", 0), getattr(full, "uss", 0))


# -- cleanup -------------------------------------------------------------------------------------


def kill_pids(pids: Iterable[int], exe_prefix: str | None = None) -> None:
    """SIGKILL each pid still alive; with `exe_prefix`, only if its argv[0] starts with it."""
    for pid in set(pids):
        if exe_prefix is not None:
            argv = _cmdline(pid)
            if not argv or not argv[0].startswith(exe_prefix):
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def reap_orphans(timeout: float = 5.0) -> None:
    """Kill and reap all our descendants (orphans come to us as subreaper); call at cleanup only."""
    deadline = time.monotonic() + timeout
    while True:
        kill_pids(descendants(os.getpid()))
        while True:  # reap all that is reapable before scanning /proc again
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                break
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)


