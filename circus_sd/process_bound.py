"""How many processes one arbiter may run (`[circus] max_processes`): by default, what its
descriptor and process limits allow, computed when it starts (or checks a file)."""

from __future__ import annotations

import dataclasses
import os
import resource

from circus_sd.fd_reserve import RESERVE

# The kernel's ceiling for pid_max on 64-bit Linux (PID_MAX_LIMIT, 2**22): no machine runs more
# processes, whatever it is set to. The most a file or a command may ever ask for.
PID_MAX_LIMIT = 1 << 22


class ProcessBoundError(Exception):
    """More processes asked for than max_processes allows; `reason` names the bound and what
    sets it. Nothing here knows of the control protocol (the config layer imports this module):
    the control handlers (incr, set, add) turn it into their error reply, whether it is raised
    before their work or during it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Limits:
    """What caps the number of processes on this machine; None where nothing does."""

    # RLIMIT_NOFILE's hard limit (the arbiter raises its soft limit to it): a running process
    # holds at least one descriptor in the arbiter (its pidfd), and RESERVE stay free.
    nofile: int | None
    # RLIMIT_NPROC, which the kernel does not apply to root.
    nproc: int | None
    pid_max: int | None
    threads_max: int | None

    @classmethod
    def read(cls) -> Limits:
        def finite(value: int) -> int | None:
            return None if value == resource.RLIM_INFINITY else value

        nproc = finite(resource.getrlimit(resource.RLIMIT_NPROC)[0])
        return cls(
            nofile=finite(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
            nproc=nproc if os.geteuid() != 0 else None,
            pid_max=kernel_number("/proc/sys/kernel/pid_max"),
            threads_max=kernel_number("/proc/sys/kernel/threads-max"),
        )


def kernel_number(path: str) -> int | None:
    """A number the kernel shows in /proc/sys (None where it cannot be read)."""
    try:
        with open(path, encoding="ascii") as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return None


@dataclasses.dataclass(frozen=True)
class ProcessBound:
    """The most processes of all watchers together, and what sets it (for messages)."""

    limit: int
    source: str

    def __str__(self) -> str:
        return f"max_processes = {self.limit} ({self.source})"

    def check(self, name: str, numprocesses: int, others: int) -> None:
        """Raise ProcessBoundError unless watcher `name` may have `numprocesses` processes
        beside the `others` of the other watchers."""
        total = others + numprocesses
        if total > self.limit:
            raise ProcessBoundError(
                f"{name}: numprocesses {numprocesses} would make {total} processes in all, "
                f"above {self}"
            )


def default_bound(limits: Limits) -> ProcessBound:
    """The tightest of the machine's limits."""
    candidates = [(PID_MAX_LIMIT, "the kernel's PID_MAX_LIMIT")]
    if limits.nofile is not None:
        reserve = min(RESERVE, limits.nofile // 4)
        candidates.append(
            (
                max(1, limits.nofile - reserve),
                f"RLIMIT_NOFILE {limits.nofile}, a descriptor per process and {reserve} kept free",
            )
        )
    if limits.nproc is not None:
        candidates.append((limits.nproc, f"RLIMIT_NPROC {limits.nproc}"))
    if limits.pid_max is not None:
        candidates.append((limits.pid_max, f"kernel.pid_max {limits.pid_max}"))
    if limits.threads_max is not None:
        candidates.append((limits.threads_max, f"kernel.threads-max {limits.threads_max}"))
    limit, source = min(candidates)
    return ProcessBound(limit, f"the default, set by {source}")


def process_bound(max_processes: int | None, limits: Limits | None = None) -> ProcessBound:
    """`[circus] max_processes` if set, else the default from `limits` (read if not given)."""
    if max_processes is not None:
        return ProcessBound(max_processes, "[circus] max_processes")
    return default_bound(limits if limits is not None else Limits.read())
