"""The reexec workload (circus-sd only): `reexec` with N processes and a writer running.

circus-sd runs N idle bench-child processes and one writer watcher (this module run as
`python -m bench.reexec writer SOCK INTERVAL`: a line "<CLOCK_MONOTONIC ns> <seq>" every
INTERVAL seconds into a FileStream). Each `reexec` is timed as `circusctl reexec` sees it (the
call, then `globaloptions` on fresh connections until it answers the next generation), and
against the arbiter's own two log lines; a thread tails the file (inotify) and stamps each line
as it lands, so the output's stall across the switch is read off the lines themselves. The pids
before and after are compared.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import itertools
import os
import re
import selectors
import shlex
import signal
import socket
import sys
import threading
import time
from typing import Any

from bench.control import ControlError
from bench.supervisors import WATCHER, CircusLike, Workload
from bench.workloads import BenchError, DaemonRun

WRITER = "writer"
WRITER_INTERVAL = 0.001
# The arbiter's log lines around a switch (circus_sd/arbiter.py, MessageId.REEXEC).
_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) circus-sd\[\d+\] \w+ "
LEAVING = re.compile(_STAMP + r"re-executing circus-sd ")
ARRIVED = re.compile(_STAMP + r"re-executed \(")
_IN_MODIFY = 0x00000002
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the writer (the supervised process) ---------------------------------------------------------


def writer_main(sock_path: str, interval: float) -> int:
    """Announce like bench-child, then write a stamped, numbered line every `interval` s."""
    announce = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    announce.connect(sock_path)
    announce.send(f"A {os.getpid()} {time.monotonic_ns()}".encode())
    seq = 0
    due = time.monotonic()
    while True:
        os.write(1, f"{time.monotonic_ns()} {seq}\n".encode())
        seq += 1
        due += interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            due = now  # late (descheduled): carry on, no burst to catch up


# -- the harness's end of the output file --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Landed:
    arrived: float  # time.monotonic() when the tail read it
    stamp: float  # when the writer wrote it (its CLOCK_MONOTONIC)
    seq: int


class Tail:
    """Reads `path` as it grows (inotify IN_MODIFY, no polling) in a thread; every line with the
    time it was read. A context manager that owns its thread and descriptors."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[Landed] = []
        self.garbled = 0
        self._cond = threading.Condition()
        libc = ctypes.CDLL(None, use_errno=True)
        self._inotify = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._inotify < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self._inotify, path.encode(), _IN_MODIFY) < 0:
            os.close(self._inotify)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        self._file = open(path, "rb")  # noqa: SIM115 (closed in __exit__)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._held = b""
        self._thread = threading.Thread(target=self._serve, name="tail", daemon=True)

    def __enter__(self) -> Tail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        self._file.close()
        for fd in (self._inotify, self._wake_r, self._wake_w):
            os.close(fd)

    def wait_stamped_after(self, t: float, timeout: float) -> bool:
        """Wait until a line written after `t` has landed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self.lines and self.lines[-1].stamp > t):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def snapshot(self) -> list[Landed]:
        with self._cond:
            return list(self.lines)

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._inotify, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            self._read()  # what landed before the watch
            while True:
                for key, _mask in selector.select():
                    if key.fd == self._wake_r:
                        return
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self._inotify, 4096):
                            pass
                    self._read()

    def _read(self) -> None:
        data = self._file.read()
        if not data:
            return
        now = time.monotonic()
        parts = (self._held + data).split(b"\n")
        self._held = parts.pop()
        got = []
        for line in parts:
            try:
                stamp, seq = line.split()
                got.append(Landed(now, int(stamp) / 1e9, int(seq)))
            except ValueError:
                self.garbled += 1
        with self._cond:
            self.lines += got
            self._cond.notify_all()


# -- the daemon's configuration ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WithWriter:
    """circus-sd's configuration plus the writer watcher, its output in one file."""

    inner: CircusLike
    output: str = "out.log"

    @property
    def name(self) -> str:
        return self.inner.name

    def write_config(self, run_dir: str, workload: Workload) -> str:
        path = self.inner.write_config(run_dir, workload)
        argv = ["-m", "bench.reexec", WRITER, os.path.join(run_dir, "a.sock"),
                str(WRITER_INTERVAL)]
        with open(path, "a") as f:
            f.write("\n".join([
                "",
                f"[watcher:{WRITER}]",
                f"cmd = {sys.executable}",
                f"args = {shlex.join(argv)}",
                f"working_dir = {_HERE}",
                "numprocesses = 1",
                "stdout_stream.class = FileStream",
                f"stdout_stream.filename = {os.path.join(run_dir, self.output)}",
            ]) + "\n")
        return path

    def command(self, config: str) -> list[str]:
        return self.inner.command(config)

    def control(self, run_dir: str, timeout: float = 5.0) -> Any:
        return self.inner.control(run_dir, timeout)

    def control_address(self, run_dir: str) -> tuple[str, str]:
        return self.inner.control_address(run_dir)

    def cli_status(self, run_dir: str, config: str) -> list[str]:
        return self.inner.cli_status(run_dir, config)


# -- the measurement -----------------------------------------------------------------------------


@dataclasses.dataclass
class Switch:
    """One re-execution; seconds."""

    wall: float  # `reexec` sent → `globaloptions` answers the next generation
    reply: float  # `reexec` sent → its reply (the installed program's check included)
    logged: float | None  # the arbiter's "re-executing" → "re-executed" log lines
    stall: float  # the longest a line written across the switch took to land in the file
    file_gap: float  # the longest time the file did not grow across the switch
    stamp_gap: float  # the largest gap between consecutive line stamps in the file


@dataclasses.dataclass
class ReexecFigures:
    switches: list[Switch]
    baseline_stall: float  # the same as `stall`, over a second without a switch
    pids_changed: int  # pids of the watchers before and not after, or after and not before
    processes: int
    lines_lost: int
    lines_duplicated: int
    lines_garbled: int
    respawn: float  # kill -9 of a process after the last switch → its replacement exists
    stop: dict[str, float]  # SIGTERM after the last switch: DaemonRun.stop's figures


def _call(endpoint: str, timeout: float, command: str, **props: Any) -> dict[str, Any]:
    from circus.client import CircusClient  # the peer's library, as the other workloads
    from circus.exc import CallError

    client = CircusClient(endpoint=endpoint, timeout=timeout)
    try:
        reply: dict[str, Any] = client.call({"command": command, "properties": props})
    except CallError as exc:
        raise ControlError(f"{command}: {exc}") from exc
    finally:
        client.stop()
    if reply.get("status") != "ok":
        raise ControlError(f"{command}: {reply}")
    return reply


def _pids(endpoint: str) -> set[int]:
    found: set[int] = set()
    for name in (WATCHER, WRITER):
        found.update(int(p) for p in _call(endpoint, 30, "list", name=name)["pids"])
    return found


def _pid_of(endpoint: str, watcher: str) -> int:
    return int(_call(endpoint, 30, "list", name=watcher)["pids"][0])


def _wait_generation(endpoint: str, wanted: int, timeout: float) -> float:
    """As `circusctl reexec` does: `globaloptions` on a fresh connection (a request sent as the
    old program closed its end is lost with it) until the generation is reached."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            probe = min(0.25, max(0.05, deadline - time.monotonic()))
            options = _call(endpoint, probe, "globaloptions")["options"]
        except ControlError:
            continue  # its endpoint is being bound again
        if options.get("generation", -1) >= wanted:
            return time.monotonic()
        time.sleep(0.01)
    raise BenchError(f"generation {wanted} not answered within {timeout:.0f} s")


def _stall(lines: list[Landed], since: float, until: float) -> tuple[float, float, float]:
    """Over the lines written in [since, until]: the longest delay before one landed, the
    longest the file did not grow, the largest gap between consecutive stamps."""
    window = [x for x in lines if since <= x.stamp <= until]
    if len(window) < 2:
        raise BenchError("no output across the switch")
    delay = max(x.arrived - x.stamp for x in window)
    grew = max(b.arrived - a.arrived for a, b in itertools.pairwise(window))
    stamps = max(b.stamp - a.stamp for a, b in itertools.pairwise(window))
    return delay, grew, stamps


def _log_intervals(log_path: str) -> list[float]:
    """Seconds between each "re-executing" line and the next "re-executed" one (ms stamps)."""
    leaving: float | None = None
    out = []
    with open(log_path, errors="replace") as f:
        for line in f:
            if m := LEAVING.match(line):
                leaving = _wall(m.group(1))
            elif (m := ARRIVED.match(line)) and leaving is not None:
                out.append(_wall(m.group(1)) - leaving)
                leaving = None
    return out


def _wall(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def measure(sup: CircusLike, child: str, base_dir: str, n: int, calls: int,
            timeout: float) -> ReexecFigures:
    """N idle children and the writer; `calls` re-executions, one after another."""
    with DaemonRun(WithWriter(sup), base_dir,
                   lambda sock: Workload((child, sock, "idle"), n, True), child) as run:
        run.wait_started(n + 1, run.d.started, 30 + n * 0.05)
        run.wait_control(30).close()
        endpoint = run.supervisor.control_address(run.dir)[1]
        output = os.path.join(run.dir, WithWriter.output)
        deadline = time.monotonic() + 10
        while not os.path.exists(output):  # readiness, not a measurement
            if time.monotonic() > deadline:
                raise BenchError(f"no {output} after 10 s")
            time.sleep(0.01)
        with Tail(output) as tail:
            quiet = time.monotonic()
            if not tail.wait_stamped_after(quiet + 1.0, 10):
                raise BenchError("the writer's lines do not land")
            baseline, _grew, _gap = _stall(tail.snapshot(), quiet, quiet + 1.0)
            before = _pids(endpoint)
            generation = _call(endpoint, 10, "globaloptions")["options"].get("generation")
            if not isinstance(generation, int):
                raise BenchError(f"globaloptions has no generation: {generation!r}")
            timed = []
            for _ in range(calls):
                t0 = time.monotonic()
                reply = _call(endpoint, timeout, "reexec")
                t_reply = time.monotonic()
                wanted = int(reply.get("generation", generation + 1))
                t_back = _wait_generation(endpoint, wanted, timeout)
                run.check_alive()
                # The stall is over once lines written after the switch have landed.
                if not tail.wait_stamped_after(t_back + 0.1, 10):
                    raise BenchError("no output after the switch")
                timed.append((t0, t_reply, t_back))
                generation = wanted
            after = _pids(endpoint)
            lines = tail.snapshot()
            garbled = tail.garbled
        # Still supervised by the last program: a killed process comes back, a stop stops all.
        writer = _pid_of(endpoint, WRITER)
        victim = next(c for c in run.registry.alive() if c.pid in after and c.pid != writer)
        t_kill = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        born = run.registry.wait_born_after(t_kill, 1, 10)
        if born is None:
            run.check_alive()
            raise BenchError("a process killed after the re-executions was not replaced in 10 s")
        stop = run.stop(timeout=60)
        logged = _log_intervals(os.path.join(run.dir, "daemon.log"))
        switches = []
        for index, (t0, t_reply, t_back) in enumerate(timed):
            stall, grew, gap = _stall(lines, t0, t_back + 0.1)
            switches.append(Switch(t_back - t0, t_reply - t0,
                                   logged[index] if index < len(logged) else None,
                                   stall, grew, gap))
        seqs = [x.seq for x in lines]
        distinct = set(seqs)
        return ReexecFigures(
            switches, baseline, len(before ^ after), len(after),
            lines_lost=(max(seqs) - min(seqs) + 1) - len(distinct),
            lines_duplicated=len(seqs) - len(distinct),
            lines_garbled=garbled,
            respawn=born[0].born - t_kill,
            stop=stop,
        )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == WRITER:
        sys.exit(writer_main(sys.argv[2], float(sys.argv[3])))
    sys.exit(f"usage: python -m {__spec__.name if __spec__ else 'bench.reexec'} "
             f"{WRITER} SOCK INTERVAL")
