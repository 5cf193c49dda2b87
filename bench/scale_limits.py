"""The machine's and each daemon's process and descriptor limits, for `make bench-scale`."""

from __future__ import annotations

import contextlib
import os
import resource

NOFILE_CEILING = 1 << 20  # what circus-sd's arbiter takes as root (circus_sd/cli.py)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _limit_text(value: int) -> str | int:
    return "unlimited" if value == resource.RLIM_INFINITY else value


def raise_own_nofile() -> dict[str, object]:
    """Raise this process's RLIMIT_NOFILE: one connection per announced child, plus the burst.

    As root the hard limit goes up too (to fs.nr_open, at most 2**20), as circus-sd's arbiter
    does for itself; otherwise the soft limit goes up to the hard one. Daemons started from here
    inherit it (Circus has no setting for its own limit: its rlimit_* options are the
    children's). Returns the limit before and after.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    if os.geteuid() == 0:
        want = max(hard, min(_read_int("/proc/sys/fs/nr_open") or hard, NOFILE_CEILING))
    refused = ""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (OSError, ValueError) as exc:
        # Root without CAP_SYS_RESOURCE (a container) cannot raise the hard limit: nor can the
        # daemons started from here, circus-sd's arbiter included.
        refused = f"raising the hard limit to {want} refused: {exc}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    after = resource.getrlimit(resource.RLIMIT_NOFILE)
    out: dict[str, object] = {"before": [_limit_text(soft), _limit_text(hard)],
                              "after": [_limit_text(after[0]), _limit_text(after[1])]}
    if refused:
        out["refused"] = refused
    return out


def machine_limits(max_n: int) -> tuple[dict[str, object], list[str]]:
    """`ulimit -u`, pid_max, threads-max, nr_open and file-max, and what would not fit max_n.

    A daemon's N children, the harness's connection to each, and the peers' pipes (supervisord:
    three per process) must all fit; the shortfalls are returned as findings, the run goes on.
    """
    nproc_soft, nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)
    info: dict[str, object] = {
        "ulimit_u": [_limit_text(nproc_soft), _limit_text(nproc_hard)],
        "pid_max": _read_int("/proc/sys/kernel/pid_max"),
        "threads_max": _read_int("/proc/sys/kernel/threads-max"),
        "nr_open": _read_int("/proc/sys/fs/nr_open"),
        "file_max": _read_int("/proc/sys/fs/file-max"),
        "euid": os.geteuid(),
    }
    problems = []
    room = max_n + 1000  # the daemon, its helpers, the harness, everything else running
    for key in ("pid_max", "threads_max"):
        value = info[key]
        if isinstance(value, int) and value < room:
            problems.append(f"{key} = {value} < {room}: N={max_n} cannot run")
    if nproc_soft != resource.RLIM_INFINITY and nproc_soft < room and os.geteuid() != 0:
        problems.append(f"ulimit -u = {nproc_soft} < {room}: N={max_n} cannot run")
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if nofile != resource.RLIM_INFINITY and nofile < room:
        problems.append(f"the harness's RLIMIT_NOFILE {nofile} < {room}")
    return info, problems


def daemon_limits(pid: int) -> dict[str, str]:
    """A running daemon's open-files and processes limits, as /proc/PID/limits shows them."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/limits") as f:
        for line in f:
            for name, key in (("Max open files", "nofile"), ("Max processes", "nproc")):
                if line.startswith(name):
                    soft, hard = line[len(name):].split()[:2]
                    out[key] = f"{soft}/{hard}"
    return out
