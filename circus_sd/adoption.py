"""Processes a previous arbiter left running, taken over instead of started a second time.

An arbiter that dies without handing its state over (SIGKILL outside systemd, or a re-executed
program that cannot read the state it was given) leaves its workers running. The next arbiter
on the same configuration finds them by the two variables every child is started with:
`CIRCUS_SD_ARBITER` (the configuration file's real path: one arbiter per file, as its control
endpoint is held by one) and `CIRCUS_SD_WATCHER`, beside Circus's `CIRCUS_WID`. A watcher's
start then takes the worker found for each wid it asks for, instead of spawning one.

A worker's own children inherit the variables. The worker leads its session (the spawner calls
setsid) and its parent is not of the same (watcher, wid); the oldest such, if a descendant made
a session of its own.

`workers` is pure; `observe` reads /proc.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from collections.abc import Iterable, Iterator

from circus_sd.cgroups import own_v2_path
from circus_sd.process import CLOCK_TICKS, boot_time, proc_stat, start_ticks

ARBITER_ENV = "CIRCUS_SD_ARBITER"
WATCHER_ENV = "CIRCUS_SD_WATCHER"
WID_ENV = "CIRCUS_WID"

log = logging.getLogger("circus_sd.adoption")


@dataclasses.dataclass(frozen=True)
class Seen:
    """One process as /proc shows it, with the marks of a circus-sd child if it has them."""

    pid: int
    ppid: int
    started: int  # clock ticks after boot (/proc/PID/stat): with the pid, names one process
    session: int
    arbiter: str | None = None
    watcher: str | None = None
    wid: int | None = None
    cgroup: str | None = None  # its cgroup v2 path, from the hierarchy's root


@dataclasses.dataclass(frozen=True)
class Found:
    """The worker of one (watcher, wid), left by a previous arbiter."""

    pid: int
    watcher: str
    wid: int
    started: int
    cgroup: str | None


def workers(seen: Iterable[Seen], arbiter: str) -> dict[tuple[str, int], Found]:
    """The worker of each (watcher, wid) among the processes marked with `arbiter`."""
    marked = {
        s.pid: s for s in seen
        if s.arbiter == arbiter and s.watcher is not None and s.wid is not None
    }
    found: dict[tuple[str, int], Found] = {}
    for process in sorted(marked.values(), key=lambda s: (s.started, s.pid)):
        assert process.watcher is not None and process.wid is not None
        key = (process.watcher, process.wid)
        parent = marked.get(process.ppid)
        if process.session != process.pid or (
            parent is not None and (parent.watcher, parent.wid) == key
        ):
            continue  # a child of the worker (a pre-fork server's), or a daemon it left
        # The oldest comes first: one that left the tree later (setsid, double fork) is not it.
        found.setdefault(key, Found(process.pid, *key, process.started, process.cgroup))
    return found


# -- reading /proc ---------------------------------------------------------------------------------


def observe() -> Iterator[Seen]:
    """Every process we may read the environment of (root: all), with its marks."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
            fields = proc_stat(pid)[1]
            ppid, started, session = int(fields[1]), int(fields[19]), int(fields[3])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or another user's (not ours to adopt)
        if ARBITER_ENV.encode() not in environ:
            yield Seen(pid, ppid, started, session)
            continue
        marks = dict(
            item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item
        )
        wid = marks.get(WID_ENV.encode(), b"")
        yield Seen(
            pid, ppid, started, session,
            arbiter=marks.get(ARBITER_ENV.encode(), b"").decode(errors="replace"),
            watcher=marks.get(WATCHER_ENV.encode(), b"").decode(errors="replace"),
            wid=int(wid) if wid.isdigit() else None,
            cgroup=_cgroup_of(pid),
        )


def _cgroup_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return own_v2_path(f.read())
    except OSError:
        return None


def started_wall(started: int) -> float:
    """The wall-clock time of a start time in clock ticks after boot, as `stats` shows it."""
    return boot_time() + started / CLOCK_TICKS


def open_if_same(worker: Found) -> int | None:
    """A pidfd of the worker, if its pid still names it (not another process since)."""
    try:
        pidfd = os.pidfd_open(worker.pid)
    except OSError:
        return None  # gone
    try:
        same = start_ticks(worker.pid) == worker.started
    except (OSError, ValueError, IndexError):
        same = False
    if not same:
        os.close(pidfd)
        return None
    return pidfd


class Adoptable:
    """Workers found at start, each claimed by its watcher's first spawn of its wid."""

    def __init__(self, found: dict[tuple[str, int], Found]) -> None:
        self._found = dict(found)

    def claim(self, watcher: str, wid: int) -> Found | None:
        return self._found.pop((watcher, wid), None)

    def stop_unclaimed(self) -> None:
        """Stop what no watcher asked for (a wid above numprocesses, a watcher gone from the
        file or not started), as the previous arbiter would have."""
        left, self._found = list(self._found.values()), {}
        for worker in left:
            self.stop(worker, "it is not wanted now")

    @staticmethod
    def stop(worker: Found, why: str) -> None:
        """SIGTERM to a worker found at start (its descendants are its to stop)."""
        pidfd = open_if_same(worker)
        if pidfd is None:
            return
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        except OSError:
            return  # ended meanwhile
        finally:
            os.close(pidfd)
        log.warning(
            "pid %d (%s, wid %d), left running by a previous arbiter: %s; sent SIGTERM",
            worker.pid, worker.watcher, worker.wid, why,
        )
