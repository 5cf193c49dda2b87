"""Keep file descriptors in reserve: spawns stop short of RLIMIT_NOFILE so the loop still serves.

Why: libzmq aborts the whole process when accept() on an ipc:// socket fails with EMFILE (its
ipc_listener asserts), so an arbiter whose processes took every descriptor would die at the next
circusctl connection, orphaning every child. A spawn is refused (a failed start, with backoff)
while it could leave fewer than `reserve` descriptors free. Connections are the other way to
use them up: control/connection_guard.py bounds those.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable

RESERVE = 32
# The most descriptors one spawn takes, for good (pidfd, pipes) or for a moment (dups, status).
PER_SPAWN = 8
RECOUNT_SECONDS = 1.0


def open_fds() -> int:
    """How many descriptors this process has open."""
    # Linux 6.2+ reports the count as the directory's size (O(1)); older kernels report 0.
    size = os.stat("/proc/self/fd").st_size
    return size if size > 0 else len(os.listdir("/proc/self/fd"))


def nofile_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class FdReserve:
    """Answers "may a process be spawned now?" without counting descriptors at every spawn:
    the count is taken at most every RECOUNT_SECONDS, plus PER_SPAWN for each spawn since, and
    taken again whenever that estimate comes near the limit."""

    def __init__(
        self,
        count: Callable[[], int] = open_fds,
        limit: Callable[[], int] = nofile_limit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count = count
        self._limit = limit
        self._clock = clock
        self._counted = 0
        self._counted_at: float | None = None
        self._spawns_since = 0

    def refusal(self) -> str | None:
        """None if a spawn may go ahead (and is counted), else why not."""
        soft = self._limit()
        if soft == resource.RLIM_INFINITY:
            return None
        reserve = min(RESERVE, soft // 4)
        usable = soft - reserve
        now = self._clock()
        estimate = self._counted + PER_SPAWN * self._spawns_since
        stale = self._counted_at is None or now - self._counted_at >= RECOUNT_SECONDS
        if stale or estimate + PER_SPAWN > usable:
            self._counted, self._counted_at, self._spawns_since = self._count(), now, 0
            estimate = self._counted
        if estimate + PER_SPAWN > usable:
            return (
                f"too many open files: {estimate} of RLIMIT_NOFILE {soft} in use "
                f"({reserve} kept free for the control socket)"
            )
        self._spawns_since += 1
        return None
