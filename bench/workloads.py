"""One supervisor daemon run at a time, and the measurements taken on it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from bench.announce import Child, Registry
from bench.control import ControlClient, ControlError, NotSupported
from bench.logcheck import LINE_BYTES, LogCheck, check, merged, wait_landed
from bench.procs import (
    Daemon,
    Memory,
    cpu_seconds,
    cpu_ticks_seconds,
    descendants,
    kill_pids,
    memory,
    reap_orphans,
)
from bench.supervisors import Supervisor, Workload


class BenchError(Exception):
    """A workload could not be measured (timeout, a daemon that died); the run goes on."""


class DaemonRun:
    """A supervisor started on a workload in a temporary directory; leaves nothing behind."""

    def __init__(
        self,
        supervisor: Supervisor,
        base_dir: str,
        make_workload: Callable[[str], Workload],
        child: str,
    ) -> None:
        self.supervisor = supervisor
        self.child = child
        self.dir = tempfile.mkdtemp(prefix=f"{supervisor.name[:6]}-", dir=base_dir)
        self.registry = Registry(os.path.join(self.dir, "a.sock"))
        self.workload = make_workload(os.path.join(self.dir, "a.sock"))
        self.config = supervisor.write_config(self.dir, self.workload)
        self.daemon: Daemon | None = None

    def __enter__(self) -> DaemonRun:
        self.registry.__enter__()
        try:
            self.daemon = Daemon(
                self.supervisor.command(self.config), os.path.join(self.dir, "daemon.log")
            )
        except BaseException:
            self.registry.close()
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        daemon = self.daemon
        assert daemon is not None
        try:
            if exc_type is not None and exc_type is not KeyboardInterrupt:
                tail = daemon.tail()
                if tail:
                    print(f"    {self.supervisor.name} log tail:\n      "
                          + tail.replace("\n", "\n      "), file=sys.stderr)
            leftovers = descendants(daemon.pid)
            if not daemon.poll_exit():
                kill_pids([daemon.pid])
            kill_pids(leftovers)
            kill_pids([c.pid for c in self.registry.alive()], exe_prefix=self.child)
            daemon.wait_exit(10)
        finally:
            self.registry.close()
            reap_orphans()
            daemon.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def d(self) -> Daemon:
        assert self.daemon is not None
        return self.daemon

    def own_pids(self) -> dict[str, int]:
        """The supervisor's own processes: the daemon, and helpers that are forks of it."""
        pids = {"daemon": self.d.pid}
        for n, pid in enumerate(self.d.helpers()):
            pids[f"helper{n or ''}"] = pid
        return pids

    def check_alive(self) -> None:
        if self.d.poll_exit():
            raise BenchError(f"{self.supervisor.name} exited early:\n{self.d.tail()}")

    # -- spawn -----------------------------------------------------------------------------------

    def wait_started(self, n: int, t0: float, timeout: float) -> list[Child]:
        """The first `n` processes born after `t0`, or BenchError (with the daemon's log)."""
        born = self.registry.wait_born_after(t0, n, timeout)
        if born is None:
            self.check_alive()
            got = len(self.registry.snapshot())
            raise BenchError(f"{self.supervisor.name}: {got}/{n} processes after {timeout:.0f} s")
        return born

    def wait_control(self, timeout: float, call_timeout: float = 60.0) -> ControlClient:
        """A client (whose calls may take `call_timeout`) once the control channel answers;
        polled with short calls: readiness, not a measurement."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            probe = self.supervisor.control(self.dir, timeout=1.0)
            try:
                probe.status()
                break
            except ControlError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                probe.close()
        return self.supervisor.control(self.dir, timeout=call_timeout)

    # -- stop ------------------------------------------------------------------------------------

    def stop(self, timeout: float, resend_after: float = 3.0) -> dict[str, float]:
        """SIGTERM the daemon; seconds until the last child exited, until none of them is a
        child of the daemon any more (reaped), and until the daemon itself exited.

        A daemon that neither exits nor loses a child within `resend_after` seconds gets SIGTERM
        again (Circus drops a quit that comes while it runs another command); times still count
        from the first one, and "resent" says how many were lost.
        """
        pids = {c.pid for c in self.registry.alive()}
        t0 = last_signal = time.monotonic()
        os.kill(self.d.pid, signal.SIGTERM)
        last_exit = reaped = None
        resent = 0
        deadline = t0 + timeout
        while True:
            exited = self.d.wait_exit(0.002)
            now = time.monotonic()
            alive = self.registry.alive_count()
            if last_exit is None and alive == 0:
                last_exit = self.registry.last_exit(pids) or t0
            # None is reaped before the last one exited: until then, no reading of the daemon's
            # list of children (at 10,000, each read took the harness a millisecond or two, so
            # that polling it every 2 ms took a core from the daemon being measured).
            if reaped is None and (
                exited or (last_exit is not None and not pids & self.d.children())
            ):
                reaped = min(now, self.d.exited) if self.d.exited is not None else now
            if exited and last_exit is not None:
                break
            if not exited and alive >= len(pids) and now - last_signal > resend_after:
                os.kill(self.d.pid, signal.SIGTERM)
                last_signal = now
                resent += 1
            if now > deadline:
                raise BenchError(
                    f"{self.supervisor.name}: not stopped after {timeout:.0f} s "
                    f"(daemon {'exited' if exited else 'running'}, {alive} children alive, "
                    f"SIGTERM resent {resent} times)"
                )
        assert reaped is not None and self.d.exited is not None
        return {
            "last_exit": last_exit - t0,
            "reaped": max(reaped, last_exit) - t0,
            "daemon_exit": self.d.exited - t0,
            "resent": resent,
        }


# -- measurements on a running daemon ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Idle:
    cpu_percent: dict[str, float]  # per own process (schedstat, ns resolution)
    cpu_percent_ticks: float  # all own processes, from utime+stime (10 ms ticks)
    memory: dict[str, Memory]


def idle(run: DaemonRun, window: float) -> Idle:
    pids = run.own_pids()
    c0 = {role: cpu_seconds([pid]) for role, pid in pids.items()}
    k0 = cpu_ticks_seconds(pids.values())
    t0 = time.monotonic()
    time.sleep(window)
    c1 = {role: cpu_seconds([pid]) for role, pid in pids.items()}
    k1 = cpu_ticks_seconds(pids.values())
    elapsed = time.monotonic() - t0
    run.check_alive()
    cpu = {role: 100 * (c1[role] - c0[role]) / elapsed for role in pids}
    mem = {role: m for role, pid in pids.items() if (m := memory(pid)) is not None}
    return Idle(cpu, 100 * (k1 - k0) / elapsed, mem)


@dataclasses.dataclass(frozen=True)
class RespawnSample:
    latency: float
    victim_age: float


def respawn(run: DaemonRun, samples: int, rng: random.Random, min_age: float,
            timeout: float) -> list[RespawnSample]:
    """kill -9 one process at a time, at random moments; time until a replacement exists.

    The kill times are a random schedule (gaps uniform in 0.1-1 s) independent of anything the
    supervisor does, so they fall at random phases of a polling supervisor's tick (Circus:
    check_delay = 5 s), without waiting out a whole tick per sample. New processes are matched
    to kills in order (the n-th newcomer replaces the n-th victim). Victims are older than
    `min_age`, so no supervisor counts a failed start (min_uptime, startsecs) and backs off.
    """
    kills: list[tuple[float, float]] = []  # (when, victim's age)
    killed: set[int] = set()
    for _ in range(samples):
        time.sleep(rng.uniform(0.1, 1.0))
        now = time.monotonic()
        victims = [c for c in run.registry.alive()
                   if now - c.born > min_age and c.pid not in killed]
        if not victims:
            run.check_alive()
            raise BenchError(f"{run.supervisor.name}: no process older than {min_age} s to kill")
        victim = rng.choice(victims)
        t0 = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        killed.add(victim.pid)
        kills.append((t0, t0 - victim.born))
    born = run.registry.wait_born_after(kills[0][0], len(kills), timeout)
    if born is None:
        run.check_alive()
        raise BenchError(f"{run.supervisor.name}: not all respawned after {timeout:.0f} s")
    out = []
    for (t0, age), child in zip(kills, born, strict=True):
        if child.born < t0:
            raise BenchError(f"{run.supervisor.name}: a process appeared before its kill")
        out.append(RespawnSample(child.born - t0, age))
    return out


def _timed(call: Callable[[], object], count: int) -> list[float]:
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


@dataclasses.dataclass
class ControlFigures:
    status: list[float]
    listing: list[float]
    stats: list[float] | None
    cli_status: list[float]
    concurrent_rate: float
    listed: int


def control(run: DaemonRun, client: ControlClient, calls: int, stats_calls: int, cli_runs: int,
            clients: int, window: float, python: str) -> ControlFigures:
    listed = client.list()
    status = _timed(client.status, calls)
    listing = _timed(client.list, max(calls // 40, 5))
    try:  # `stats` reads /proc files of every process: slow (seconds at N=500), few samples
        stats: list[float] | None = _timed(client.stats, stats_calls) if stats_calls else []
    except NotSupported:
        stats = None
    cli = []
    argv = run.supervisor.cli_status(run.dir, run.config)
    for _ in range(cli_runs):
        t0 = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=60, check=False)
        cli.append(time.perf_counter() - t0)
        if done.returncode not in (0, 3):  # supervisorctl status: 3 = some not running
            raise BenchError(f"{argv}: exit {done.returncode}: {done.stderr.decode()[-300:]}")
    return ControlFigures(status, listing, stats, cli,
                          concurrent(run, clients, window, python), listed)


def concurrent(run: DaemonRun, clients: int, window: float, python: str) -> float:
    """`clients` processes calling `status` in a loop over the same window: calls per second.

    Each client says "ready" once imported and connected; then all get the same start time.
    """
    kind, address = run.supervisor.control_address(run.dir)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs = [
        subprocess.Popen(
            [python, "-m", "bench.control_client", kind, address, str(window)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=here, text=True,
        )
        for _ in range(clients)
    ]
    total = 0
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":  # EOF if it failed: bounded
                raise BenchError("a control client failed to connect")
        start_at = time.monotonic() + 0.2
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{start_at}\n")
            proc.stdin.flush()
        for proc in procs:
            out, _ = proc.communicate(timeout=window + 60)
            calls, late, _errors = out.split()
            if float(late) > 0.1:
                raise BenchError(f"a control client started {late} s late")
            total += int(calls)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return total / window


@dataclasses.dataclass(frozen=True)
class LogFigures:
    mb_per_s: float
    cpu_s_per_mb: float
    check: LogCheck


def log_throughput(run: DaemonRun, writers: int, lines: int, timeout: float) -> LogFigures:
    """Writers (already started, waiting) write at once; MB/s landed intact in the file sink(s)
    and the supervisor's CPU seconds per MB landed. `writers` and `lines` are totals over the
    watchers; each watcher's file gets its share."""
    paths = run.workload.stdout_files()
    assert paths
    if not run.registry.wait_alive(writers, timeout):
        run.check_alive()
        raise BenchError(f"{run.supervisor.name}: log writers did not start")
    time.sleep(0.3)
    pids = list(run.own_pids().values())
    c0 = cpu_seconds(pids)
    t0 = time.monotonic()
    run.registry.go(run.registry.alive())
    if not run.registry.wait(lambda cs: all(c.done for c in cs), timeout):
        raise BenchError(f"{run.supervisor.name}: log writers did not finish")
    share = writers * lines // len(paths)
    landed = max(wait_landed(path, share * LINE_BYTES, 1.0, timeout) for path in paths)
    cpu = cpu_seconds(pids) - c0
    result = merged([check(path, share) for path in paths])
    mb = result.lines * LINE_BYTES / 1e6
    return LogFigures(result.intact_bytes / 1e6 / (landed - t0), cpu / mb if mb else 0.0, result)


def median(values: list[float]) -> float:
    return statistics.median(values)


@contextlib.contextmanager
def deadline_alarm(seconds: float):  # type: ignore[no-untyped-def]
    """Bound a whole phase: SIGALRM raises TimeoutError in the main thread (then cleanup runs)."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"phase took more than {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
