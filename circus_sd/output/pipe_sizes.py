"""How big the output pipes are: as big as helps, without crowding out the user's other pipes.

A bigger pipe means fewer, bigger reads and hand-overs per MB (issue 18: 64 KiB pipes cost an
arbiter writing ten files about 50 % more CPU per MB than 1 MiB ones). The kernel counts every pipe
against its user's `fs.pipe-user-pages-soft` (64 MiB by default) unless the process has
CAP_SYS_RESOURCE or CAP_SYS_ADMIN; past that limit each new pipe of the user gets one or two pages,
and growing one is refused. So: with either capability (in the initial user namespace: not root in
a rootless container), every pipe is made 1 MiB at once; without, only a pipe found (nearly) full,
its writer kept waiting by the arbiter, is grown, fourfold up to 1 MiB, and only while the
arbiter's own pipes stay within a quarter of the limit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

PIPE_MAX = 1 << 20  # fs.pipe-max-size's default: more than that takes CAP_SYS_RESOURCE
GROWTH = 4
# The share of the user's pipe pages the arbiter's own pipes may reach by growing.
SHARE = 4
_PAGE = 4096
_CAP_SYS_ADMIN, _CAP_SYS_RESOURCE = 21, 24  # linux/capability.h
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_PROC_USER_INIT_INO = 0xEFFFFFFD  # linux/proc_ns.h
_SOFT = "/proc/sys/fs/pipe-user-pages-soft"
_HARD = "/proc/sys/fs/pipe-user-pages-hard"


def _read_int(path: str, default: int) -> int:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _pipes_uncounted() -> bool:
    """Does the kernel leave this process's pipes out of its user's limits?"""
    effective = 0
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                effective = int(line.split()[1], 16)
    capable = bool(effective & (1 << _CAP_SYS_ADMIN | 1 << _CAP_SYS_RESOURCE))
    return capable and _in_initial_user_namespace()


def _in_initial_user_namespace() -> bool:
    """The kernel asks for the capability in the initial user namespace: root in a rootless
    container has every capability in its own, and its pipes are counted all the same. The
    initial namespace has a fixed inode (PROC_USER_INIT_INO); a child one may have an identity
    uid_map too."""
    try:
        return os.stat("/proc/self/ns/user").st_ino == _PROC_USER_INIT_INO
    except OSError:
        pass
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False  # unknown: counted, the side that cannot use up the user's pipes


def user_limit() -> int | None:
    """Bytes of pipes the kernel lets this process's user have; None: no limit for it."""
    if _pipes_uncounted():
        return None
    limits = [pages for pages in (_read_int(_SOFT, 16384), _read_int(_HARD, 0)) if pages]
    return min(limits) * _PAGE if limits else None  # 0: that limit is off


class PipeSizes:
    """The arbiter's output pipes: their sizes, and the bytes they may take together."""

    def __init__(self, user_limit: int | None) -> None:
        self.budget = None if user_limit is None else user_limit // SHARE
        self.in_use = 0  # bytes: the capacities of the pipes being read

    @property
    def uncounted(self) -> bool:
        return self.budget is None

    def made(self, fd: int) -> None:
        """A new pipe: 1 MiB at once when the kernel does not count it."""
        if self.budget is None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_MAX)

    def opened(self, capacity: int) -> None:
        self.in_use += capacity

    def closed(self, capacity: int) -> None:
        self.in_use -= capacity

    def grow(self, fd: int, capacity: int) -> int:
        """A pipe found full: its new capacity (the same if it may not or cannot grow)."""
        target = min(capacity * GROWTH, PIPE_MAX)
        if target <= capacity:
            return capacity
        if self.budget is not None and self.in_use + target - capacity > self.budget:
            return capacity
        try:
            grown = int(fcntl.fcntl(fd, _F_SETPIPE_SZ, target))
        except OSError:  # EPERM: the user's other processes took the rest of its limit
            return capacity
        self.in_use += grown - capacity
        return grown
