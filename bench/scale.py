"""`make bench-scale` (issue 18): 1,000 to 10,000 processes under circus-sd, Circus, supervisord.

    .build/bench-venv/bin/python -m bench.scale --child .build/bench/bench-child

For each N (BENCH_SCALE_N, default 1000,5000,10000) and each shape (one watcher of N, 100
watchers of N/100, and for circus-sd one watcher with its output closed): the machine's burst
posix_spawn and kill-and-reap of N, then per supervisor two daemon runs of the C bench child.
The daemon run: daemon start → N exist, idle CPU, RSS and PSS, SIGTERM → daemon exit and all
reaped. The command run (autostart off): the `start` command → N exist, then `status`, `list`
and `stats` of every process through the client library. Both runs count tracebacks,
"Exception ignored" and warning lines in the daemon's output and log. A phase that fails or
passes its bound is "gave up at N (phase, reason)" and is not tried at a larger N; everything
is killed by pid in a finally. BENCH_SCALE_REF (default 100) adds a small N for the `start`
command's cost per process alone, the baseline of "the same cost from 100 on".
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator

from bench import machine
from bench.announce import Child
from bench.control import CircusControl, ControlClient, ControlError, SupervisorControl
from bench.procs import become_subreaper
from bench.results import MACHINE, Metric, Results, dump, load
from bench.run import _version, machine_info, measure_and_keep
from bench.scale_limits import daemon_limits, machine_limits, raise_own_nofile
from bench.scale_report import FIGURES, MACHINE_FIGURES, write_outputs
from bench.supervisors import WATCHER, CircusLike, Supervisor, Workload, all_supervisors
from bench.workloads import BenchError, DaemonRun, deadline_alarm, idle

FAILURES = (BenchError, ControlError, TimeoutError, OSError, subprocess.SubprocessError)


@dataclasses.dataclass(frozen=True)
class Shape:
    """`watchers` watchers (programs) of N / watchers processes each; `closed`: their stdout and
    stderr closed (circus-sd only, see OutputClosed)."""

    watchers: int
    closed: bool = False

    @classmethod
    def parse(cls, token: str) -> Shape:
        """"1", "100": that many watchers; "1c": one watcher, output closed."""
        token = token.strip()
        return cls(int(token.removesuffix("c")), token.endswith("c"))

    @property
    def key(self) -> str:
        return f"{self.watchers}w" + ("-closed" if self.closed else "")

    @property
    def label(self) -> str:
        text = f"{self.watchers} watchers of N/{self.watchers}"
        if self.watchers == 1:
            text = "1 watcher"
        return text + (", output closed" if self.closed else "")

    @property
    def listed(self) -> str:
        """The watcher `list` asks for: the only one, or the first of many."""
        return WATCHER if self.watchers == 1 else f"{WATCHER}1"

    def workload(self, child: str, n: int, autostart: bool) -> Callable[[str], Workload]:
        per = n // self.watchers
        return lambda sock: Workload((child, sock, "idle"), per, autostart, None, self.watchers)

    def names(self) -> list[str]:
        return Workload((), 0, watchers=self.watchers).names()


@dataclasses.dataclass(frozen=True)
class OutputClosed(CircusLike):
    """circus-sd with `close_child_stdout` and `close_child_stderr`: no output pipes, one
    descriptor (a pidfd) per child instead of three. Without an output stream circus-sd pipes
    each child's output into its own; Circus lets the children write straight to its stdout
    and keeps nothing per child. Under a hard RLIMIT_NOFILE of 20,000 (a container without
    CAP_SYS_RESOURCE) only this fits 10,000 children of circus-sd."""

    @classmethod
    def of(cls, sup: Supervisor) -> OutputClosed:
        assert isinstance(sup, CircusLike)
        return cls(sup.name, sup.daemon, sup.circusctl)

    def write_config(self, run_dir: str, workload: Workload) -> str:
        path = super().write_config(run_dir, workload)
        with open(path) as f:
            text = f.read()
        # Every [watcher:] section of the shared INI has exactly one "autostart =" line.
        text = text.replace("\nautostart = ",
                            "\nclose_child_stdout = true\nclose_child_stderr = true\nautostart = ")
        with open(path, "w") as f:
            f.write(text)
        return path


@dataclasses.dataclass(frozen=True)
class Plan:
    ns: tuple[int, ...]
    ref_n: int | None  # the `start` command alone at this N: the baseline of cost per process
    shapes: tuple[Shape, ...]
    peer_shapes: tuple[Shape, ...]
    supervisors: tuple[str, ...]
    idle_settle: float = 2.0
    idle_window: float = 5.0
    status_calls: int = 200
    list_calls: int = 20
    stats_calls: int = 3
    call_budget: float = 3.0  # seconds of repeated calls per figure, beyond the first few

    @classmethod
    def from_env(cls) -> Plan:
        def ints(name: str, default: str) -> tuple[int, ...]:
            text = os.environ.get(name, default)
            return tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())

        def shape_list(name: str, default: str) -> tuple[Shape, ...]:
            return tuple(Shape.parse(t) for t in os.environ.get(name, default).split(",")
                         if t.strip())

        ref = ints("BENCH_SCALE_REF", "100")
        shapes = shape_list("BENCH_SCALE_SHAPES", "1,100,1c")
        peer = {s for s in shape_list("BENCH_SCALE_PEER_SHAPES", "1,100") if not s.closed}
        return cls(
            ns=ints("BENCH_SCALE_N", "1000,5000,10000"),
            ref_n=ref[0] if ref else None,
            shapes=shapes,
            peer_shapes=tuple(s for s in shapes if s in peer),
            supervisors=tuple(
                os.environ.get("BENCH_SUPERVISORS", "circus-sd,circus,supervisord").split(",")
            ),
        )

    # Bounds per phase, growing with N: e.g. 120 s for a start of 10,000 (12 ms a process).
    @staticmethod
    def start_bound(n: int) -> float:
        return max(30.0, 0.012 * n)

    stop_bound = start_bound  # a stop of N may take as long as their start

    @staticmethod
    def stats_bound(n: int) -> float:
        return max(20.0, 0.006 * n)

    @staticmethod
    def list_bound(n: int) -> float:
        return max(10.0, 0.003 * n)


# -- the client library, extended to many watchers -----------------------------------------------


class CircusScale(CircusControl):
    """`start` and `stats` of every watcher when there are many.

    Circus's `start` without a name (or with a pattern) starts only the `autostart` watchers:
    with autostart off, each watcher gets its own `start`, one after another, for circus-sd as
    for Circus. Waiting for each (one watcher: not waiting, as `make bench`): Circus refuses a
    command while it runs another ("already running", with a traceback in its log), so a
    non-waiting one would be sent again and again. `stats` without a name reports every
    watcher's processes.
    """

    def __init__(self, endpoint: str, shape: Shape, timeout: float) -> None:
        super().__init__(endpoint, shape.listed, timeout)
        self._names = shape.names()

    def start(self) -> None:
        if len(self._names) == 1:
            super().start()
            return
        for name in self._names:
            self._call("start", name=name, waiting=True)

    def stats(self) -> None:
        if len(self._names) > 1:
            self._call("stats")
        else:
            super().stats()


class SupervisorScale(SupervisorControl):
    """supervisord has no per-process stats: getAllProcessInfo is its equivalent; many programs
    are started with startAllProcesses."""

    def __init__(self, serverurl: str, shape: Shape, timeout: float) -> None:
        super().__init__(serverurl, WATCHER, timeout)
        self._every = shape.watchers > 1

    def start(self) -> None:
        if self._every:
            self._call("startAllProcesses", False)
        else:
            super().start()

    def stats(self) -> None:
        self.list()


def scale_client(sup: Supervisor, run_dir: str, shape: Shape, timeout: float) -> ControlClient:
    kind, address = sup.control_address(run_dir)
    if kind == "circus":
        return CircusScale(address, shape, timeout)
    return SupervisorScale(address, shape, timeout)


def timed_calls(call: Callable[[], object], most: int, least: int, budget: float) -> list[float]:
    """Up to `most` calls, stopping after `budget` seconds once `least` were made."""
    times: list[float] = []
    end = time.monotonic() + budget
    while len(times) < most and (len(times) < least or time.monotonic() < end):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


def wait_all(run: DaemonRun, n: int, t0: float, bound: float, stall: float = 20.0) -> list[Child]:
    """The first `n` processes born after `t0`; BenchError past `bound`, or as soon as none was
    born for `stall` seconds (a daemon short of descriptors retries for ever), with the
    daemon's own word on it if it logged one."""
    deadline = t0 + bound
    count, changed = -1, time.monotonic()
    while True:
        born = run.registry.wait_born_after(t0, n, 1.0)
        if born is not None:
            return born
        run.check_alive()
        now = time.monotonic()
        if run.registry.alive_count() != count:
            count, changed = run.registry.alive_count(), now
        if now > deadline or now - changed > stall:
            why = f"{count:,}/{n:,} after {now - t0:.0f} s"
            if now <= deadline:
                why = f"stalled at {count:,}/{n:,} for {stall:.0f} s"
            said = _shortage(run.d.log_path)
            raise BenchError(why + (f"; the daemon said: {said}" if said else ""))


_SHORTAGE = re.compile(r"lack of resources|[Tt]oo many open files|EMFILE|minfds|EAGAIN")


def _shortage(path: str) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        for line in f:
            if _SHORTAGE.search(line):
                return line.strip()[:300]
    return ""


# -- the daemon's output -------------------------------------------------------------------------

_PATTERNS = {
    "tracebacks": re.compile(r"Traceback \(most recent call last\)"),
    "exc_ignored": re.compile(r"Exception ignored"),
    "warnings": re.compile(r"\bWARN(ING)?\b|Warning\b|^<4>"),
}


def count_log_lines(paths: list[str]) -> tuple[dict[str, int], str]:
    """Lines of each kind in each file (supervisord writes its log to a file and to stdout:
    the larger count of the two); and the first traceback's text, if any."""
    counts = dict.fromkeys(_PATTERNS, 0)
    first = ""
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for kind, pattern in _PATTERNS.items():
            counts[kind] = max(counts[kind], sum(1 for line in lines if pattern.search(line)))
        if not first:
            for index, line in enumerate(lines):
                if _PATTERNS["tracebacks"].search(line):
                    first = "\n".join(lines[index:index + 25])
                    break
    return counts, first


# -- the run -------------------------------------------------------------------------------------


class Scale:
    def __init__(self, plan: Plan, supervisors: list[Supervisor], child: str, base: str,
                 results: Results, results_dir: str, stamp: str) -> None:
        self.plan = plan
        self.supervisors = supervisors
        self.child = child
        self.base = base
        self.results = results
        self.results_dir = results_dir
        self.stamp = stamp
        self.gave_up: dict[tuple[str, str, str], str] = {}
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", file=sys.stderr, flush=True)

    def finding(self, text: str) -> None:
        self.say(f"  note: {text}")
        findings = self.results.extra.setdefault("findings", [])
        if text not in findings:
            findings.append(text)

    def metric(self, kind: str, shape: Shape, n: int) -> Metric:
        return self.results.metrics[f"scale.{kind}.{shape.key}.{n}"]

    def define_metrics(self) -> None:
        """Every row up front, so the table reads figure by figure, N by N."""
        p, r = self.plan, self.results
        ns = sorted({*p.ns, *([p.ref_n] if p.ref_n else [])})
        for kind, label, unit, machine_kind in MACHINE_FIGURES:
            for n in ns:
                r.define(Metric(f"scale.machine.{kind}.{n}", label, unit,
                                machine_key=f"scale.machine.{machine_kind}.{n}"
                                if machine_kind else None))
        for kind, label, unit, machine_kind in FIGURES:
            for shape in p.shapes:
                for n in ns:
                    r.define(Metric(f"scale.{kind}.{shape.key}.{n}", f"{label} ({shape.label})",
                                    unit, machine_key=f"scale.machine.{machine_kind}.{n}"
                                    if machine_kind else None))

    @contextlib.contextmanager
    def phase(self, who: str, shape: Shape, n: int, name: str,
              *metrics: Metric) -> Iterator[None]:
        """One phase; on failure or past its bound: "gave up at N (phase, reason)" in its cells,
        and the phase is not tried at a larger N."""
        try:
            yield
        except FAILURES as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
            # A daemon that exited: its log's tail follows; the line saying why, or the last.
            said = [line for line in lines[1:] if _SHORTAGE.search(line) or "rror" in line]
            brief = lines[0] + (f" {(said or lines[1:])[-1]}" if len(lines) > 1 else "")
            reason = f"{type(exc).__name__}: {brief}"[:300]
            text = f"gave up at {n:,} ({name}, {reason})"
            self.finding(f"{who}, {shape.label}: {text}")
            if len(text) > 140:  # the whole reason is in the notes; the table's cells stay short
                text = text[:136] + "...)"
            self.gave_up[(who, shape.key, name)] = text
            if not isinstance(exc, BenchError | ControlError | TimeoutError):
                traceback.print_exc(file=sys.stderr)
            for metric in metrics:
                self.results.note(metric, who, text)

    def blocked(self, who: str, shape: Shape, names: tuple[str, ...],
                *metrics: Metric) -> bool:
        """A phase this one needs gave up at a smaller N: its cells say so; skip."""
        for name in names:
            text = self.gave_up.get((who, shape.key, name))
            if text:
                for metric in metrics:
                    self.results.note(metric, who, text)
                return True
        return False

    # -- machine ---------------------------------------------------------------------------------

    def machine(self, n: int, reps: int) -> None:
        r = self.results
        self.say(f"machine: burst posix_spawn and kill-and-reap of {n:,}, {reps} times")
        for _ in range(reps):
            try:
                calls, exist, stop = machine.burst(self.child, self.base, n, timeout=120)
            except FAILURES as exc:
                self.finding(f"machine burst of {n:,} failed: {type(exc).__name__}: {exc}")
                continue
            r.add(r.metrics[f"scale.machine.burst.{n}"], MACHINE, exist)
            r.add(r.metrics[f"scale.machine.burst_pp.{n}"], MACHINE, 1000 * exist / n)
            r.add(r.metrics[f"scale.machine.burst_calls.{n}"], MACHINE, calls)
            r.add(r.metrics[f"scale.machine.kill_reap.{n}"], MACHINE, stop)
            r.add(r.metrics[f"scale.machine.kill_reap_pp.{n}"], MACHINE, 1000 * stop / n)

    # -- one supervisor, one shape, one N --------------------------------------------------------

    def record_limits(self, who: str, run: DaemonRun) -> None:
        seen = self.results.extra.setdefault("daemon_limits", {})
        if who not in seen:
            seen[who] = daemon_limits(run.d.pid)

    def count_logs(self, who: str, shape: Shape, n: int, run: DaemonRun, what: str,
                   totals: dict[str, int]) -> None:
        paths = [run.d.log_path]
        if os.path.exists(os.path.join(run.dir, "supervisord.log")):
            paths.append(os.path.join(run.dir, "supervisord.log"))
        counts, first = count_log_lines(paths)
        for kind, count in counts.items():
            totals[kind] = totals.get(kind, 0) + count
        if counts["tracebacks"] or counts["exc_ignored"]:
            logs = os.path.join(self.results_dir, "logs")
            os.makedirs(logs, exist_ok=True)
            for path in paths:
                name = f"scale-{self.stamp}-{who}-{shape.key}-{n}-{what}-{os.path.basename(path)}"
                shutil.copyfile(path, os.path.join(logs, name))
            self.finding(f"{who}, {shape.label}, N={n:,}, {what}: {counts['tracebacks']} "
                         f"traceback(s), {counts['exc_ignored']} 'Exception ignored' (logs: "
                         f"{logs}/scale-{self.stamp}-{who}-{shape.key}-{n}-{what}-*); first:\n"
                         + first)

    def daemon_run(self, sup: Supervisor, shape: Shape, n: int, totals: dict[str, int]) -> None:
        """Daemon start → N exist; idle CPU, RSS, PSS; SIGTERM → exit and all reaped."""
        p, r, who = self.plan, self.results, sup.name
        m = {k: self.metric(k, shape, n) for k in (
            "start_daemon", "start_daemon_pp", "cpu", "rss_main", "rss_sum", "pss_sum",
            "stop", "stop_last")}
        if self.blocked(who, shape, ("daemon start",), *m.values()):
            return
        self.say(f"{who}, {shape.label}, N={n:,}: daemon start, idle, SIGTERM")
        with self.phase(who, shape, n, "daemon start", *m.values()), \
                DaemonRun(sup, self.base, shape.workload(self.child, n, True), self.child) as run:
            try:
                born = wait_all(run, n, run.d.started, p.start_bound(n))
                took = born[-1].born - run.d.started
                r.add(m["start_daemon"], who, took)
                r.add(m["start_daemon_pp"], who, 1000 * took / n)
                self.record_limits(who, run)
                idle_metrics = [m[k] for k in ("cpu", "rss_main", "rss_sum", "pss_sum")]
                if not self.blocked(who, shape, ("idle",), *idle_metrics):
                    with self.phase(who, shape, n, "idle", *idle_metrics):
                        time.sleep(p.idle_settle)
                        got = idle(run, p.idle_window)
                        r.add(m["cpu"], who, sum(got.cpu_percent.values()))
                        r.add(m["rss_main"], who, got.memory["daemon"].rss / 1e6)
                        r.add(m["rss_sum"], who, sum(x.rss for x in got.memory.values()) / 1e6)
                        r.add(m["pss_sum"], who, sum(x.pss for x in got.memory.values()) / 1e6)
                if not self.blocked(who, shape, ("stop",), m["stop"], m["stop_last"]):
                    with self.phase(who, shape, n, "stop", m["stop"], m["stop_last"]):
                        stop = run.stop(timeout=p.stop_bound(n))
                        if stop["resent"]:
                            self.finding(f"{who} ignored SIGTERM {stop['resent']:.0f} time(s) "
                                         f"(N={n:,}; resent after 3 s, counted from the first)")
                        r.add(m["stop"], who, max(stop["daemon_exit"], stop["reaped"]))
                        r.add(m["stop_last"], who, stop["last_exit"])
            finally:
                self.count_logs(who, shape, n, run, "daemon-run", totals)

    def command_run(self, sup: Supervisor, shape: Shape, n: int, totals: dict[str, int],
                    control_too: bool = True) -> None:
        """Autostart off, the `start` command → N exist; status, list, stats; killed by pid."""
        p, r, who = self.plan, self.results, sup.name
        m = {k: self.metric(k, shape, n) for k in (
            "start_cmd", "start_cmd_pp", "status", "list", "stats")}
        if self.blocked(who, shape, ("start",), *m.values()):
            return
        self.say(f"{who}, {shape.label}, N={n:,}: `start` command"
                 + (", status, list, stats" if control_too else ""))
        with self.phase(who, shape, n, "start", *m.values()), \
                DaemonRun(sup, self.base, shape.workload(self.child, n, False), self.child) as run:
            try:
                run.wait_control(30).close()
                self.record_limits(who, run)
                bound = p.start_bound(n)
                client = scale_client(sup, run.dir, shape, bound)
                try:
                    time.sleep(0.3)
                    with deadline_alarm(bound + 5):
                        t0 = time.monotonic()
                        client.start()
                        born = wait_all(run, n, t0, bound)
                finally:
                    client.close()
                took = born[-1].born - t0
                r.add(m["start_cmd"], who, took)
                r.add(m["start_cmd_pp"], who, 1000 * took / n)
                if control_too:
                    time.sleep(1.0)  # the start's own work settles first
                    self.control(sup, shape, n, run, m)
            finally:
                self.count_logs(who, shape, n, run, "command-run", totals)
            # No graceful stop here (measured in the daemon run): the run's exit kills by pid.

    def control(self, sup: Supervisor, shape: Shape, n: int, run: DaemonRun,
                m: dict[str, Metric]) -> None:
        p, r, who = self.plan, self.results, sup.name
        calls: tuple[tuple[str, float, Callable[[ControlClient], list[float]]], ...] = (
            ("status", 10.0, lambda c: timed_calls(c.status, p.status_calls, 5, p.call_budget)),
            ("list", p.list_bound(n),
             lambda c: timed_calls(c.list, p.list_calls, 3, p.call_budget)),
            ("stats", p.stats_bound(n),
             lambda c: timed_calls(c.stats, p.stats_calls, 1, p.call_budget)),
        )
        for name, bound, measure in calls:
            if self.blocked(who, shape, (name,), m[name]):
                continue
            with self.phase(who, shape, n, name, m[name]):
                client = scale_client(sup, run.dir, shape, bound)
                try:
                    # Each call bounded; the alarm, over all of them, also bounds XML-RPC calls
                    # (supervisor's transport has no timeout of its own).
                    with deadline_alarm(bound * (p.stats_calls + 2)):
                        if name == "list":
                            listed = client.list()
                            want = n if isinstance(client, SupervisorScale) else n // shape.watchers
                            if listed != want:
                                raise BenchError(f"listed {listed} processes, expected {want}")
                        times = measure(client)
                finally:
                    client.close()
                if name == "stats" and max(times) > bound:
                    raise TimeoutError(f"a stats call took {max(times):.0f} s")
                r.add(m[name], who, *(1000 * t for t in times))

    # -- the whole run ---------------------------------------------------------------------------

    def all(self) -> None:
        p = self.plan
        if p.ref_n and Shape(1) in p.shapes:
            self.machine(p.ref_n, 5)
            for sup in self.supervisors:
                totals: dict[str, int] = {}
                self.command_run(sup, Shape(1), p.ref_n, totals, control_too=False)
        for n in p.ns:
            self.machine(n, 3)
            for shape in p.shapes:
                for sup in self.supervisors:
                    if sup.name != "circus-sd" and shape not in p.peer_shapes:
                        continue
                    runs = OutputClosed.of(sup) if shape.closed else sup
                    totals = {}
                    self.daemon_run(runs, shape, n, totals)
                    self.command_run(runs, shape, n, totals)
                    said = [self.gave_up.get((sup.name, shape.key, phase), "")
                            for phase in ("daemon start", "start")]
                    for kind, count in totals.items():
                        if all("exited early" in text for text in said):  # its refusal alone
                            self.results.note(self.metric(kind, shape, n), sup.name,
                                              "the daemon did not start")
                        else:
                            self.results.add(self.metric(kind, shape, n), sup.name, count)
            self.machine(n, 2)  # before and after: the machine's load changes meanwhile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--child", required=True, help="the compiled bench/child.c")
    parser.add_argument("--project-venv", default=".venv")
    parser.add_argument("--results", default="bench/results")
    parser.add_argument("--from-json", metavar="PATH",
                        help="run nothing: write a saved run's .md and .png again")
    args = parser.parse_args(argv)
    if args.from_json:
        write_outputs(load(args.from_json), args.from_json.removesuffix(".json"))
        return 0
    plan = Plan.from_env()
    child = os.path.abspath(args.child)
    project_venv = os.path.abspath(args.project_venv)

    # SIGTERM (`timeout`) unwinds like Ctrl-C, through every finally: nothing stays behind.
    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    become_subreaper()
    nofile = raise_own_nofile()
    limits, problems = machine_limits(max((*plan.ns, plan.ref_n or 0)))
    sd_version = subprocess.run([os.path.join(project_venv, "bin", "circus-sd"), "--version"],
                                capture_output=True, text=True, check=False).stdout.strip()
    started = datetime.datetime.now()
    meta: dict[str, object] = {
        "started": started.isoformat(timespec="seconds"),
        "plan": {"ns": plan.ns, "ref_n": plan.ref_n,
                 "shapes": [s.key for s in plan.shapes],
                 "shape_labels": {s.key: s.label for s in plan.shapes},
                 "peer_shapes": [s.key for s in plan.peer_shapes],
                 "supervisors": plan.supervisors, "machine_reps": "3 before and 2 after each N",
                 "idle_window": plan.idle_window},
        "machine": machine_info(),
        "limits": {**limits, "harness_nofile": nofile,
                   "supervisord": "minfds = 6 N + 256, minprocs = N + 200 (bench/supervisors.py)",
                   "circus": "no setting for its own limit: inherits the harness's",
                   "circus-sd": "raises its own (circus_sd.cli._raise_nofile_limit)"},
        "versions": {"circus-sd": sd_version, "circus": _version("circus"),
                     "supervisor": _version("supervisor"), "pyzmq": _version("pyzmq")},
    }
    results = Results(meta)
    if "refused" in nofile:
        problems.append(f"{nofile['refused']}: every daemon here has at most "
                        f"{nofile['after'][1]} descriptors (circus-sd: a pidfd and two pipes "  # type: ignore[index]
                        "per child; supervisord: minfds = 6 N + 256)")
    for problem in problems:
        results.extra.setdefault("findings", []).append(f"limit: {problem}")
    supervisors = [s for s in all_supervisors(project_venv, os.path.abspath(sys.prefix))
                   if s.name in plan.supervisors]
    base = tempfile.mkdtemp(prefix="css-", dir="/tmp")  # short: ipc:// paths have 107 bytes
    scale = Scale(plan, supervisors, child, base, results, args.results,
                  started.strftime("%Y%m%d-%H%M%S"))
    scale.define_metrics()
    scale.say(f"limits: {limits}; harness RLIMIT_NOFILE {nofile}")

    def keep() -> None:
        out = os.path.join(args.results, f"scale-{scale.stamp}")
        os.makedirs(args.results, exist_ok=True)
        dump(results, out + ".json")
        write_outputs(results, out)

    return measure_and_keep(scale.all, scale.say, meta, base, scale.t0, keep)


if __name__ == "__main__":
    sys.exit(main())
