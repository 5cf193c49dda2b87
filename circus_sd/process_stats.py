"""Per-process statistics in Circus's `stats` format, read from /proc.

The figures are psutil's (`Process.memory_info`, `cpu_times`, `cpu_percent`, `create_time`,
`username`, `nice`, `name`), read from /proc/PID/stat and /proc/PID/status alone (psutil reads
stat, statm, status and /proc/stat, asks getpriority and looks the user up, each through its
wrappers), with the boot time and user names read at most once a second and the total memory
once: a `stats` of 10,000 processes spent most of its 3 s in psutil.
"""

from __future__ import annotations

import os
import pwd
import time
from dataclasses import dataclass
from typing import Any

from circus_sd.process import CLOCK_TICKS, boot_time, child_pids, proc_stat, read_small
from circus_sd.sizes import human_bytes

NO_SUCH_PROCESS = "No such process (stopped?)"

# The kernel keeps 15 bytes of a program's name (TASK_COMM_LEN); psutil then takes the name
# from the command line when it begins with those 15.
_COMM_MAX = 15
# Boot time and user names are read at most this often: a `stats` of thousands reads them
# once, not once per process (the boot time moves only when the clock is set).
_FACTS_LIFETIME = 1.0


def _ctime(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:05.2f}"


@dataclass(slots=True)
class _Sample:
    """A process's CPU time when last seen, for the next `cpu` percentage."""

    started: int  # clock ticks from boot to the process's start: with the pid, it names it
    at: float  # time.monotonic()
    busy: float  # CPU seconds (user + system)


@dataclass(slots=True)
class _Stat:
    """The fields of /proc/PID/stat that `stats` shows."""

    name: str
    utime: int  # clock ticks
    stime: int
    nice: int
    started: int  # clock ticks since boot
    threads: int


def _read_stat(pid: int) -> _Stat:
    name, fields = proc_stat(pid)
    return _Stat(
        name=os.fsdecode(name),
        utime=int(fields[11]),
        stime=int(fields[12]),
        nice=int(fields[16]),
        started=int(fields[19]),
        threads=int(fields[17]),
    )


def _direct_children(pid: int, stat: _Stat) -> list[int]:
    """process.child_pids(pid), the common case first: a process of one thread lists its
    children in its one task's file, read without listing its tasks (half the cost)."""
    if stat.threads != 1:
        return child_pids(pid)
    try:
        fd = os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []  # gone meanwhile: none, as child_pids says
    try:
        data = b""
        while chunk := os.read(fd, 4096):
            data += chunk
    except ProcessLookupError:
        return []
    finally:
        os.close(fd)
    return [int(child) for child in data.split()]


@dataclass(slots=True)
class _Status:
    """The fields of /proc/PID/status that `stats` shows."""

    uid: int  # real
    rss: int  # bytes
    vms: int


def _read_status(pid: int) -> _Status:
    """The real uid (psutil's `username`), and the memory sizes psutil reads from statm: the
    same counts (in kB here, in pages there), where stat's rss is the kernel's per-CPU estimate
    (a few hundred kB off). A process without memory (a zombie) has no Vm lines: 0, as in statm."""
    data = read_small(f"/proc/{pid}/status")  # about 1.5 kB
    return _Status(
        uid=int(_status_field(data, b"Uid:", pid)),
        rss=int(_status_field(data, b"VmRSS:", pid, b"0")) * 1024,
        vms=int(_status_field(data, b"VmSize:", pid, b"0")) * 1024,
    )


def _status_field(data: bytes, name: bytes, pid: int, missing: bytes | None = None) -> bytes:
    """The first word after `name` at the start of a line."""
    start = data.find(b"\n" + name)
    if start < 0:
        if missing is None:
            raise ProcessLookupError(pid)
        return missing
    start += len(name) + 1
    return data[start : data.index(b"\n", start)].split()[0]


def _full_name(pid: int, name: str) -> str:
    """psutil's `name()`: past 15 bytes, the command line's program if it begins alike."""
    if len(name) < _COMM_MAX:
        return name
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            data = os.fsdecode(f.read())
    except PermissionError:
        return name
    if not data:
        return name
    # As psutil: a process that rewrote its command line may have left spaces, not NULs.
    separator = "\x00" if data.endswith("\x00") else " "
    data = data.removesuffix(separator)
    words = data.split(separator)
    if separator == "\x00" and len(words) == 1 and " " in data:
        words = data.split(" ")
    program = os.path.basename(words[0])
    return program if program.startswith(name) else name


class _MachineFacts:
    """Boot time (/proc/stat's btime, as psutil) and user names, refreshed at most every
    _FACTS_LIFETIME seconds; total memory once, as psutil does."""

    def __init__(self) -> None:
        self._read_at = -_FACTS_LIFETIME
        self._boot_time = 0.0
        self._users: dict[int, str] = {}
        self._total_memory = 0

    def _fresh(self) -> None:
        now = time.monotonic()
        if now - self._read_at < _FACTS_LIFETIME:
            return
        self._read_at = now
        self._users.clear()
        self._boot_time = boot_time()

    def boot_time(self) -> float:
        self._fresh()
        return self._boot_time

    def user(self, uid: int) -> str:
        self._fresh()
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)  # no account: psutil shows the number
            self._users[uid] = name
        return name

    def total_memory(self) -> int:
        if not self._total_memory:
            # Imported by the first `stats` call, not at start: psutil costs the arbiter 11 ms
            # of its start and 0.8 MB, and most arbiters are never asked for stats.
            import psutil

            self._total_memory = psutil.virtual_memory().total
        return self._total_memory


class ProcessStats:
    """Keeps a sample per process between calls, descendants included, so that `cpu` is a real
    percentage since the last call (or, at a process's first call, since its birth)."""

    def __init__(self) -> None:
        self._samples: dict[int, _Sample] = {}
        # The descendants' samples, by the process whose stats show them: kept while they
        # live, dropped with it.
        self._descendants: dict[int, dict[int, _Sample]] = {}
        self._facts = _MachineFacts()

    def forget(self, pid: int) -> None:
        self._samples.pop(pid, None)
        self._descendants.pop(pid, None)

    def info(self, pid: int, extended: bool = False, wid: int | None = None) -> Any:
        try:
            stat = _read_stat(pid)
            # A pid is forgotten when its process is reaped: the sample kept is this process's.
            info, self._samples[pid] = self._info(pid, stat, self._samples.get(pid), wid)
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            self.forget(pid)
            return NO_SUCH_PROCESS
        # `extended`: every descendant, not only the children.
        children = child_pids(pid, recursive=True) if extended else _direct_children(pid, stat)
        info["children"] = self._children(pid, children)
        return info

    def _children(self, pid: int, pids: list[int]) -> list[dict[str, Any]]:
        known = self._descendants.get(pid, {})
        kept: dict[int, _Sample] = {}
        children = []
        for child in pids:
            try:
                stat = _read_stat(child)
                info, kept[child] = self._info(child, stat, known.get(child), None)
            except (ProcessLookupError, FileNotFoundError, PermissionError):
                continue
            children.append(info)
        self._descendants[pid] = kept
        return children

    def _info(
        self, pid: int, stat: _Stat, before: _Sample | None, wid: int | None
    ) -> tuple[dict[str, Any], _Sample]:
        status = _read_status(pid)
        user = self._facts.user(status.uid)
        name = _full_name(pid, stat.name)
        at = time.monotonic()
        busy = stat.utime / CLOCK_TICKS + stat.stime / CLOCK_TICKS
        created = stat.started / CLOCK_TICKS + self._facts.boot_time()
        now = time.time()
        if before is None or before.started != stat.started:
            # No earlier sample (or the pid is another process's now): its average since it
            # started.
            cpu = round(100.0 * busy / max(now - created, 1e-3), 1)
        elif at > before.at:
            cpu = round(100.0 * (busy - before.busy) / (at - before.at), 1)
        else:
            cpu = 0.0
        rss, vms = status.rss, status.vms
        info = {
            "pid": pid,
            "wid": wid,
            "mem_info1": human_bytes(rss),
            "mem_info2": human_bytes(vms),
            # Exact figures beside Circus's rounded strings (for plugins and exporters).
            "rss": rss,
            "vms": vms,
            "cpu": cpu,
            # Seconds of CPU used so far: what counters (Prometheus) are made of.
            "cpu_seconds": busy,
            "mem": round(rss / self._facts.total_memory() * 100, 1),
            "ctime": _ctime(busy),
            "username": user,
            "nice": stat.nice,
            "cmdline": name,
            "create_time": created,
            "started": created,
            "age": round(now - created, 3),
        }
        return info, _Sample(stat.started, at, busy)
