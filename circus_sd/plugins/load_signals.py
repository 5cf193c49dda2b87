"""Load signals for autoscale, one small strategy each: CPU (cgroup or psutil), cgroup CPU
pressure, a listening socket's accept queue. Each reads the kernel's files (paths injectable)."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import socket
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import psutil

from circus_sd.cgroups import find_v2_mount, own_v2_path, parse_flat_keyed


class LoadSignal(Protocol):
    """`measure(pids, now)`: the watcher's load now, or None when it cannot be told yet."""

    name: str

    def measure(self, pids: Sequence[int], now: float) -> float | None: ...


# -- CPU time of processes (psutil) ----------------------------------------------------------------


class CpuMeter:
    """CPU seconds each process used since the previous `sample` (psutil, /proc/PID/stat).

    A process is known by (pid, start time), so a reused pid starts afresh; a process not seen
    before counts with all its CPU time (it started since, or the meter is new: see `primed`).
    """

    def __init__(self) -> None:
        self._seen: dict[int, tuple[float, float]] = {}  # pid -> (start time, cpu seconds)
        self._last: float | None = None

    def sample(self, pids: Iterable[int], now: float) -> tuple[dict[int, float], float | None]:
        """({pid: CPU seconds since the last sample}, seconds since it, None the first time)."""
        seen: dict[int, tuple[float, float]] = {}
        used: dict[int, float] = {}
        for pid in pids:
            try:
                process = psutil.Process(pid)
                with process.oneshot():
                    times = process.cpu_times()
                    started = process.create_time()
            except psutil.Error:
                continue
            total = times.user + times.system
            before = self._seen.get(pid)
            used[pid] = total - before[1] if before and before[0] == started else total
            seen[pid] = (started, total)
        elapsed = None if self._last is None else now - self._last
        self._seen, self._last = seen, now
        return used, elapsed


def with_descendants(pids: Iterable[int]) -> list[int]:
    found = []
    for pid in pids:
        found.append(pid)
        with contextlib.suppress(psutil.Error):
            found.extend(child.pid for child in psutil.Process(pid).children(recursive=True))
    return found


class ProcessCpu:
    """Mean CPU % per process (100 = one core each), processes and their descendants, psutil."""

    name = "cpu"

    def __init__(self) -> None:
        self._meter = CpuMeter()

    def measure(self, pids: Sequence[int], now: float) -> float | None:
        used, elapsed = self._meter.sample(with_descendants(pids), now)
        if not pids or not elapsed or elapsed <= 0:
            return None
        return 100.0 * sum(used.values()) / elapsed / len(pids)


# -- the watcher's cgroup (per-watcher cgroups: circus_sd/cgroups.py) ----------------------------


@dataclasses.dataclass(frozen=True)
class CgroupFinder:
    """Finds a watcher's own cgroup from its processes: the arbiter puts each process in a leaf
    `watcher-<name>/wid-<n>-<k>`, so the leaf's parent is the watcher's cgroup."""

    proc: Path = Path("/proc")
    mount: Path | None = None  # the cgroup2 mount point; read from /proc/self/mountinfo if None

    def mount_point(self) -> Path | None:
        if self.mount is not None:
            return self.mount
        try:
            found = find_v2_mount((self.proc / "self" / "mountinfo").read_text())
        except OSError:
            return None
        return Path(found) if found else None

    def watcher_cgroup(self, pids: Sequence[int]) -> Path | None:
        mount = self.mount_point()
        if mount is None or not pids:
            return None
        parents = set()
        for pid in pids:
            try:
                text = (self.proc / str(pid) / "cgroup").read_text()
            except OSError:
                return None
            path = own_v2_path(text)
            if path is None:
                return None
            leaf = Path(path.strip())
            if not leaf.name.startswith("wid-") or not leaf.parent.name.startswith("watcher-"):
                return None
            parents.add(leaf.parent)
        if len(parents) != 1:
            return None
        return mount / str(parents.pop()).lstrip("/")


class CgroupCpu:
    """Mean CPU % per process from the watcher cgroup's `cpu.stat` usage (all descendants)."""

    name = "cpu (cgroup)"

    def __init__(self, finder: CgroupFinder) -> None:
        self._finder = finder
        self._last: tuple[Path, float, int] | None = None  # cgroup, time, usage_usec

    def available(self, pids: Sequence[int]) -> bool:
        return self._finder.watcher_cgroup(pids) is not None

    def measure(self, pids: Sequence[int], now: float) -> float | None:
        cgroup = self._finder.watcher_cgroup(pids)
        if cgroup is None:
            self._last = None
            return None
        try:
            usage = parse_flat_keyed((cgroup / "cpu.stat").read_text())["usage_usec"]
        except (OSError, KeyError):
            self._last = None
            return None
        last, self._last = self._last, (cgroup, now, usage)
        if last is None or last[0] != cgroup or now <= last[1]:
            return None
        return 100.0 * (usage - last[2]) / 1e6 / (now - last[1]) / len(pids)


class CpuLoad:
    """The `cpu` signal: the watcher's cgroup usage when it has a cgroup, else psutil."""

    name = "cpu"

    def __init__(self, finder: CgroupFinder | None = None) -> None:
        self.cgroup = CgroupCpu(finder or CgroupFinder())
        self.processes = ProcessCpu()
        self.source = "psutil"

    def measure(self, pids: Sequence[int], now: float) -> float | None:
        if self.cgroup.available(pids):
            self.source = "cgroup"
            return self.cgroup.measure(pids, now)
        self.source = "psutil"
        return self.processes.measure(pids, now)


class CgroupPressure:
    """The `pressure` signal: `some avg10` of the watcher cgroup's `cpu.pressure` (PSI): the
    share of the last 10 s in which some of its processes waited for a CPU, in %."""

    name = "pressure"

    def __init__(self, finder: CgroupFinder | None = None) -> None:
        self._finder = finder or CgroupFinder()

    def measure(self, pids: Sequence[int], now: float) -> float | None:
        cgroup = self._finder.watcher_cgroup(pids)
        if cgroup is None:
            return None
        try:
            text = (cgroup / "cpu.pressure").read_text()
        except OSError:
            return None
        return parse_pressure(text)


def parse_pressure(text: str) -> float | None:
    for line in text.splitlines():
        kind, *fields = line.split()
        if kind != "some":
            continue
        for field in fields:
            key, _, value = field.partition("=")
            if key == "avg10":
                with contextlib.suppress(ValueError):
                    return float(value)
    return None


# -- a listening socket's accept queue -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Listener:
    """A TCP listening socket as /proc/net/tcp{,6} shows it; `queued`: connections waiting to
    be accepted (the kernel's sk_ack_backlog), `backlog`: the most it holds."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    queued: int
    backlog: int


_TCP_LISTEN = "0A"


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # The kernel prints each 32-bit word of the address in host byte order.
    words = [int(hex_address[i : i + 8], 16) for i in range(0, len(hex_address), 8)]
    raw = b"".join(struct.pack("=I", word) for word in words)
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return ipaddress.ip_address(socket.inet_ntop(family, raw))


def parse_proc_net_tcp(text: str) -> list[Listener]:
    """The listening sockets of a /proc/net/tcp or /proc/net/tcp6 text."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5 or fields[3] != _TCP_LISTEN:
            continue
        address, _, port = fields[1].partition(":")
        backlog, _, queued = fields[4].partition(":")
        found.append(Listener(_address(address), int(port, 16), int(queued, 16), int(backlog, 16)))
    return found


def _numeric(host: str) -> str:
    """An address as the kernel lists it: a host name is resolved (e.g. localhost)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0])
    except (OSError, IndexError):
        raise ValueError(f"cannot resolve {host!r}") from None


@dataclasses.dataclass(frozen=True)
class SocketAddress:
    host: str | None  # None or a wildcard: any listener on the port
    port: int

    @classmethod
    def parse(cls, text: str) -> SocketAddress:
        """`PORT`, `HOST:PORT` or `[IPV6]:PORT`; ValueError otherwise."""
        host, sep, port = text.strip().rpartition(":")
        if not sep:
            host, port = "", text.strip()
        if not port.isdecimal() or not 0 < int(port) < 65536:
            raise ValueError(f"expected PORT or HOST:PORT, got {text!r}")
        host = host.strip("[]")
        if host:
            host = _numeric(host)
        return cls(host or None, int(port))

    def matches(self, listener: Listener) -> bool:
        if listener.port != self.port:
            return False
        if self.host is None or listener.address.is_unspecified:
            return True
        wanted = ipaddress.ip_address(self.host)
        if wanted.is_unspecified:
            return True
        return listener.address == wanted


class AcceptQueue:
    """The `queue` signal: connections waiting in the accept queue of the listening socket(s)
    at an address (all of them with SO_REUSEPORT), from /proc/net/tcp and tcp6."""

    name = "queue"

    def __init__(self, address: SocketAddress, proc: Path = Path("/proc")) -> None:
        self.address = address
        self._files = [proc / "net" / "tcp", proc / "net" / "tcp6"]

    def listeners(self) -> list[Listener]:
        found = []
        for path in self._files:
            with contextlib.suppress(OSError):
                found.extend(parse_proc_net_tcp(path.read_text()))
        return [listener for listener in found if self.address.matches(listener)]

    def measure(self, pids: Sequence[int], now: float) -> float | None:
        listeners = self.listeners()
        if not listeners:
            return None
        return float(sum(listener.queued for listener in listeners))
