"""`make bench`: run every workload against circus-sd, Circus and supervisord; print and save."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator

from bench import journal_sink, machine, reexec
from bench.control import ControlError
from bench.procs import become_subreaper, reap_orphans
from bench.results import MACHINE, Metric, Results, dump, load, plot
from bench.supervisors import CircusLike, Supervisor, Workload, all_supervisors
from bench.workloads import (
    BenchError,
    DaemonRun,
    control,
    deadline_alarm,
    idle,
    log_throughput,
    respawn,
)

NEEDS_CONTROL = "n/a (needs control)"
NEEDS_STREAMS = "n/a (needs control/streams)"
LOG_WRITERS = 10
PY_WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "py_writer.py")
# (case, lines per write, watchers): issue 18's three workloads, 10 Python writers in all.
PY_LOG_CASES = (("batch", 80, 1), ("line", 1, 1), ("files", 80, 10))


@dataclasses.dataclass(frozen=True)
class Plan:
    quick: bool
    ns: tuple[int, ...]
    reps: int  # daemon start/stop repetitions per N
    reps_large: int  # ... for N >= 1000
    command_reps: int
    idle_settle: float
    stop_settle: float
    idle_window: float
    respawn_n: int
    respawn_samples: int
    control_calls: int
    cli_runs: int
    clients: int
    client_window: float
    log_lines: int  # per writer
    log_reps: int
    pylog_lines: int  # per Python writer (issue 18: 20 MB each in the full run)
    journal_lines: int  # per writer, into the journald sinks (journald: ~50k native entries/s here)
    reexec_ns: tuple[int, ...]  # circus-sd's `reexec` with N processes and a writer
    reexec_calls: int
    machine_reps: int
    true_window: float
    supervisors: tuple[str, ...]
    workloads: frozenset[str]

    @classmethod
    def from_env(cls) -> Plan:
        quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
        ns: tuple[int, ...] = (100,) if quick else (100, 500, 1000)
        if os.environ.get("BENCH_N"):
            ns = tuple(int(n) for n in os.environ["BENCH_N"].split(","))
        every = "machine,spawn,command,idle,respawn,control,log,pylog,reexec"
        return cls(
            quick=quick,
            ns=ns,
            reps=3 if quick else 5,
            reps_large=3,
            command_reps=2 if quick else 3,
            idle_settle=1.0 if quick else 2.0,
            stop_settle=1.0,
            idle_window=5.0 if quick else 20.0,
            respawn_n=min(ns) if quick else (500 if 500 in ns else max(ns)),
            respawn_samples=5 if quick else 20,
            control_calls=100 if quick else 400,
            cli_runs=3 if quick else 5,
            clients=10,
            client_window=1.0 if quick else 2.0,
            log_lines=20_000 if quick else 100_000,
            log_reps=2 if quick else 3,
            pylog_lines=50_000 if quick else 200_000,
            journal_lines=3_000 if quick else 10_000,
            reexec_ns=ns if os.environ.get("BENCH_N") else (100,) if quick else (500, 1000),
            reexec_calls=5,
            machine_reps=3 if quick else 5,
            true_window=0.5 if quick else 1.0,
            supervisors=tuple(
                os.environ.get("BENCH_SUPERVISORS", "circus-sd,circus,supervisord").split(",")
            ),
            workloads=frozenset(os.environ.get("BENCH_WORKLOADS", every).split(",")),
        )


class Bench:
    def __init__(self, plan: Plan, supervisors: list[Supervisor], child: str, base_dir: str,
                 results: Results, seed: int, results_dir: str) -> None:
        self.plan = plan
        self.supervisors = supervisors
        self.child = child
        self.base = base_dir
        self.results = results
        self.rng = random.Random(seed)
        self.caps: dict[str, dict[str, bool]] = {}
        self.current: DaemonRun | None = None
        self.results_dir = results_dir

    def finding(self, text: str) -> None:
        if not text.startswith("FAILED"):
            self.say(f"  note: {text}")
        findings = self.results.extra.setdefault("findings", [])
        if text not in findings:
            findings.append(text)

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.results.meta['t0']:6.1f}s] {text}", file=sys.stderr,
              flush=True)

    @contextlib.contextmanager
    def attempt(self, what: str, *cells: tuple[Metric, str]) -> Iterator[None]:
        """Run one measurement; on failure note the error in its cells and go on."""
        try:
            yield
        except (BenchError, ControlError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            brief = lines[0] + (f" ... {lines[-1]}" if len(lines) > 1 else "") if lines else ""
            self.say(f"  FAILED {what}: {exc}")
            self.finding(f"FAILED {what}: {type(exc).__name__}: {brief}{self.keep_log(what)}")
            if not isinstance(exc, BenchError | ControlError):
                traceback.print_exc(file=sys.stderr)
            for metric, who in cells:
                self.results.note(metric, who, f"error: {type(exc).__name__}")

    def run(self, make: Callable[[str], Workload], sup: Supervisor,
            child: str | None = None) -> DaemonRun:
        self.current = DaemonRun(sup, self.base, make, child or self.child)
        return self.current

    def keep_log(self, what: str) -> str:
        """Copy the daemon log of the run that failed next to the results; its note."""
        run = self.current
        if run is None or not os.path.exists(os.path.join(run.dir, "daemon.log")):
            return ""
        logs = os.path.join(self.results_dir, "logs")
        os.makedirs(logs, exist_ok=True)
        name = f"{self.results.meta['started']}-{what}.log".replace(" ", "_").replace(":", "")
        shutil.copyfile(os.path.join(run.dir, "daemon.log"), os.path.join(logs, name))
        return f" (log: {os.path.join(logs, name)})"

    def idle_children(self, n: int, autostart: bool = True) -> Callable[[str], Workload]:
        return lambda sock: Workload((self.child, sock, "idle"), n, autostart)

    # -- machine ---------------------------------------------------------------------------------

    def machine_limits(self) -> None:
        p, r = self.plan, self.results
        m_true = r.define(Metric("machine.true_rate", "machine: posix_spawn+reap /bin/true", "1/s",
                                 higher_is_better=True))
        self.say("machine limits")
        for _ in range(p.machine_reps):
            r.add(m_true, MACHINE, machine.spawn_true_rate(p.true_window))
        for n in p.ns:
            calls = Metric(f"machine.burst_calls.{n}", "machine: N posix_spawn calls", "s")
            exist = Metric(f"machine.burst.{n}", "machine: burst spawn → N exist", "s")
            stop = Metric(f"machine.burst_stop.{n}", "machine: SIGTERM N → all reaped", "s")
            for _ in range(p.machine_reps):
                with self.attempt(f"burst {n}", (exist, MACHINE)):
                    c, e, s = machine.burst(self.child, self.base, n, timeout=60)
                    r.add(calls, MACHINE, c)
                    r.add(exist, MACHINE, e)
                    r.add(stop, MACHINE, s)

    def machine_logs(self) -> None:
        p, r = self.plan, self.results
        self.say("machine log baselines")
        for mode in ("batch", "line"):
            for via_cat, name in ((False, "file"), (True, "cat")):
                how = "straight to a file" if not via_cat else "pipe into cat"
                metric = Metric(f"log.machine_{name}.{mode}",
                                f"machine: log {mode} {how}", "MB/s", higher_is_better=True)
                for _ in range(p.log_reps):
                    with self.attempt(f"machine log {name} {mode}", (metric, MACHINE)):
                        mbps, result = machine.log_baseline(
                            self.child, self.base, LOG_WRITERS, p.log_lines, mode, via_cat, 120
                        )
                        r.add(metric, MACHINE, mbps)
                        if result.torn or result.missing:
                            r.extra.setdefault("machine_log_damage", []).append(
                                {"how": name, "mode": mode, "torn": result.torn,
                                 "missing": result.missing})

    # -- capabilities ----------------------------------------------------------------------------

    def probe(self, sup: Supervisor) -> dict[str, bool]:
        """Does this supervisor answer on its control endpoint, and write file streams?"""
        caps = {"control": False, "streams": False}

        def workload(sock: str) -> Workload:
            out = os.path.join(os.path.dirname(sock), "probe.log")
            return Workload((self.child, sock, "write", "1", "line"), 1, True, out)

        with self.run(workload, sup) as run:
            run.wait_started(1, run.d.started, 30)
            run.registry.go(run.registry.alive())
            try:
                run.wait_control(3.0).close()
                caps["control"] = True
            except ControlError:
                pass
            path = run.workload.stdout_file
            assert path is not None
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not caps["streams"]:
                caps["streams"] = os.path.exists(path) and os.path.getsize(path) >= 100
                time.sleep(0.02)
        return caps

    # -- supervisors -----------------------------------------------------------------------------

    def spawn_stop(self, sup: Supervisor, n: int, first: bool) -> None:
        r, who = self.results, sup.name
        m_start = Metric(f"spawn.daemon.{n}", "spawn: daemon start → N exist", "s",
                         machine_key=f"machine.burst.{n}")
        m_first = Metric(f"spawn.first.{n}", "spawn: daemon start → 1st exists", "s")
        m_last = Metric(f"stop.last_exit.{n}", "stop: SIGTERM → last child exit", "s",
                        machine_key=f"machine.burst_stop.{n}")
        m_reaped = Metric(f"stop.reaped.{n}", "stop: SIGTERM → none remain (reaped)", "s",
                          machine_key=f"machine.burst_stop.{n}")
        m_exit = Metric(f"stop.daemon_exit.{n}", "stop: SIGTERM → daemon exit", "s",
                        machine_key=f"machine.burst_stop.{n}")
        m_lag = Metric(f"stop.exit_lag.{n}", "stop: daemon exit - last child exit", "s")
        with self.attempt(f"{who} N={n}", (m_start, who)), \
                self.run(self.idle_children(n), sup) as run:
            born = run.wait_started(n, run.d.started, 30 + n * 0.05)
            r.add(m_start, who, born[-1].born - run.d.started)
            r.add(m_first, who, born[0].born - run.d.started)
            if first:
                self.on_running(sup, run, n)
            with self.attempt(f"{who} stop N={n}", (m_last, who)):
                # The same pause for all before SIGTERM: start-up work finishes (Circus drops a
                # quit that comes while it still runs its start command).
                time.sleep(self.plan.stop_settle)
                stop = run.stop(timeout=90)
                if stop["resent"]:
                    self.finding(f"{who} ignored SIGTERM {stop['resent']:.0f} time(s) (N={n}, "
                                 "resent after 3 s; the stop times count from the first)")
                r.add(m_last, who, stop["last_exit"])
                r.add(m_reaped, who, stop["reaped"])
                r.add(m_exit, who, stop["daemon_exit"])
                r.add(m_lag, who, stop["daemon_exit"] - stop["last_exit"])

    def on_running(self, sup: Supervisor, run: DaemonRun, n: int) -> None:
        """The first repetition of each N: idle cost, respawn, control, on the running daemon."""
        p, r, who = self.plan, self.results, sup.name
        if "idle" in p.workloads:
            m = {k: Metric(f"idle.{k}.{n}", label, unit) for k, label, unit in [
                ("cpu", "idle: CPU, own processes", "% core"),
                ("cpu_main", "idle: CPU, main process", "% core"),
                ("cpu_helper", "idle: CPU, spawner helper", "% core"),
                ("rss_sum", "idle: RSS, own processes", "MB"),
                ("rss_main", "idle: RSS, main process", "MB"),
                ("rss_helper", "idle: RSS, spawner helper", "MB"),
                ("pss_sum", "idle: PSS, own processes", "MB"),
            ]}
            with self.attempt(f"{who} idle N={n}", (m["cpu"], who)):
                time.sleep(p.idle_settle)
                got = idle(run, p.idle_window)
                r.add(m["cpu"], who, sum(got.cpu_percent.values()))
                r.add(m["cpu_main"], who, got.cpu_percent["daemon"])
                r.add(m["rss_main"], who, got.memory["daemon"].rss / 1e6)
                r.add(m["rss_sum"], who, sum(x.rss for x in got.memory.values()) / 1e6)
                r.add(m["pss_sum"], who, sum(x.pss for x in got.memory.values()) / 1e6)
                helpers = [role for role in got.memory if role != "daemon"]
                if helpers:
                    r.add(m["cpu_helper"], who, sum(got.cpu_percent[h] for h in helpers))
                    r.add(m["rss_helper"], who, sum(got.memory[h].rss for h in helpers) / 1e6)
                else:
                    r.note(m["cpu_helper"], who, "none")
                    r.note(m["rss_helper"], who, "none")
                r.extra.setdefault("idle_cpu_ticks", {}).setdefault(who, {})[n] = (
                    got.cpu_percent_ticks)
        if "respawn" in p.workloads and n == p.respawn_n:
            m_resp = Metric(f"respawn.{n}", "respawn after kill -9", "ms")
            with self.attempt(f"{who} respawn", (m_resp, who)):
                samples = respawn(run, p.respawn_samples, self.rng, min_age=2.0, timeout=30)
                r.add(m_resp, who, *(s.latency * 1000 for s in samples))
        if "control" in p.workloads:
            self.control(sup, run, n)

    def control(self, sup: Supervisor, run: DaemonRun, n: int) -> None:
        p, r, who = self.plan, self.results, sup.name
        metrics = [
            Metric(f"control.status.{n}", "control: status via library", "ms"),
            Metric(f"control.list.{n}", "control: list N via library", "ms"),
            Metric(f"control.stats.{n}", "control: stats of N via library", "ms"),
            Metric(f"control.cli.{n}", "control: CLI status wall time", "s"),
            Metric(f"control.concurrent.{n}", f"control: {p.clients} clients' status calls",
                   "1/s", higher_is_better=True),
        ]
        if not self.caps[who]["control"]:
            for metric in metrics:
                r.note(metric, who, NEEDS_CONTROL)
            return
        with self.attempt(f"{who} control N={n}", *((m, who) for m in metrics)):
            client = run.wait_control(10)
            try:
                # A `stats` of 500 takes ~10 s, of 1000 longer still: sampled sparingly.
                stats_calls = 3 if n <= 100 else 1 if n <= 500 else 0
                got = control(run, client, p.control_calls, stats_calls, p.cli_runs, p.clients,
                              p.client_window, sys.executable)
            finally:
                client.close()
            if got.listed != n:  # the figures would be of another N: not recorded
                raise BenchError(f"{who} listed {got.listed} processes, expected {n}")
            r.add(metrics[0], who, *(t * 1000 for t in got.status))
            r.add(metrics[1], who, *(t * 1000 for t in got.listing))
            if got.stats is None:
                r.note(metrics[2], who, "no such call")
            elif not got.stats:
                r.note(metrics[2], who, "skipped (N>500)")
            else:
                r.add(metrics[2], who, *(t * 1000 for t in got.stats))
            r.add(metrics[3], who, *got.cli_status)
            r.add(metrics[4], who, got.concurrent_rate)

    def command_start(self, sup: Supervisor, n: int) -> None:
        r, who = self.results, sup.name
        metric = Metric(f"spawn.command.{n}", "spawn: `start` command → N exist", "s",
                        machine_key=f"machine.burst.{n}")
        if not self.caps[who]["control"]:
            r.note(metric, who, NEEDS_CONTROL)
            return
        for _ in range(self.plan.command_reps if n < 1000 else 2):
            with self.attempt(f"{who} start command N={n}", (metric, who)), \
                    self.run(self.idle_children(n, autostart=False), sup) as run:
                client = run.wait_control(30)
                try:
                    time.sleep(0.3)
                    t0 = time.monotonic()
                    client.start()
                    born = run.wait_started(n, t0, 30 + n * 0.05)
                finally:
                    client.close()
                r.add(metric, who, born[-1].born - t0)
            # No graceful stop here (measured elsewhere): the run's exit kills all by pid.

    def logs(self, sup: Supervisor) -> None:
        p, r, who = self.plan, self.results, sup.name
        for mode in ("batch", "line"):
            what = "batched writes" if mode == "batch" else "one write per line"
            mbps = Metric(f"log.{mode}.mbps", f"log: {LOG_WRITERS} writers, {what}, file sink",
                          "MB/s", higher_is_better=True, machine_key=f"log.machine_cat.{mode}")
            torn = Metric(f"log.{mode}.torn", f"log ({mode}): lines torn or merged", "%")
            lost = Metric(f"log.{mode}.missing", f"log ({mode}): lines missing", "%")
            cpu = Metric(f"log.{mode}.cpu", f"log ({mode}): supervisor CPU per MB", "CPU s/MB")
            if not self.caps[who]["streams"]:
                for metric in (mbps, torn, lost, cpu):
                    r.note(metric, who, NEEDS_STREAMS)
                continue

            def workload(sock: str, mode: str = mode) -> Workload:
                out = os.path.join(os.path.dirname(sock), "out.log")
                argv = (self.child, sock, "write", str(p.log_lines), mode)
                return Workload(argv, LOG_WRITERS, True, out)

            for _ in range(p.log_reps):
                with self.attempt(f"{who} log {mode}", (mbps, who)), \
                        self.run(workload, sup) as run:
                    got = log_throughput(run, LOG_WRITERS, p.log_lines, timeout=120)
                    r.add(mbps, who, got.mb_per_s)
                    r.add(torn, who, 100 * got.check.torn / max(got.check.lines, 1))
                    r.add(lost, who, 100 * got.check.missing / got.check.expected_lines)
                    r.add(cpu, who, got.cpu_s_per_mb)

    def py_logs(self) -> None:
        """Issue 18's workloads: Python writers, 8,000-byte writes (above PIPE_BUF) or one write
        per line, into one shared file or one file per watcher; supervisors interleaved."""
        p, r = self.plan, self.results
        for case, per_write, watchers in PY_LOG_CASES:
            what = f"{per_write} lines per write" if per_write > 1 else "one write per line"
            where = "one file" if watchers == 1 else f"{watchers} watchers, a file each"
            mbps = Metric(f"pylog.{case}.mbps", f"log: {LOG_WRITERS} Python writers, {what}, "
                          f"{where}", "MB/s", higher_is_better=True)
            torn = Metric(f"pylog.{case}.torn", f"pylog ({case}): lines torn or merged", "%")
            lost = Metric(f"pylog.{case}.missing", f"pylog ({case}): lines missing", "%")
            cpu = Metric(f"pylog.{case}.cpu", f"pylog ({case}): supervisor CPU per MB",
                         "CPU s/MB")
            per_watcher = LOG_WRITERS // watchers

            def workload(sock: str, per_write: int = per_write, watchers: int = watchers,
                         per_watcher: int = per_watcher) -> Workload:
                name = "out.log" if watchers == 1 else "out.{watcher}.log"
                argv = (sys.executable, PY_WRITER, sock, str(p.pylog_lines), str(per_write))
                return Workload(argv, per_watcher, True, os.path.join(os.path.dirname(sock),
                                                                      name), watchers)

            for rep in range(p.log_reps):
                for sup in self.supervisors:
                    who = sup.name
                    if not self.caps[who]["streams"]:
                        for metric in (mbps, torn, lost, cpu):
                            r.note(metric, who, NEEDS_STREAMS)
                        continue
                    self.say(f"{who}: pylog {case} {rep + 1}/{p.log_reps}")
                    with self.attempt(f"{who} pylog {case}", (mbps, who)), \
                            self.run(workload, sup, sys.executable) as run:
                        got = log_throughput(run, LOG_WRITERS, p.pylog_lines, timeout=180)
                        r.add(mbps, who, got.mb_per_s)
                        r.add(torn, who, 100 * got.check.torn / max(got.check.lines, 1))
                        r.add(lost, who, 100 * got.check.missing / got.check.expected_lines)
                        r.add(cpu, who, got.cpu_s_per_mb)

    def journal_logs(self, sup: Supervisor) -> None:
        """circus-sd's JournalStream, native and direct, into a private journald of each run's
        own (bench/journal_sink.py): the log workload, counted in the journal."""
        p, r, who = self.plan, self.results, sup.name
        reason = journal_sink.unavailable() if isinstance(sup, CircusLike) else "not circus-sd"
        self.say(f"{who}: log throughput into a private journald"
                 + (f": skipped, {reason}" if reason else ""))
        for sink in journal_sink.SINKS:
            for mode in ("batch", "line"):
                what = "batched writes" if mode == "batch" else "one write per line"
                tag = f"log ({mode}, journald {sink})"
                key = f"log.journald.{sink}.{mode}"
                mbps = Metric(f"{key}.mbps", f"log: {LOG_WRITERS} writers, {what}, journald "
                              f"{sink} sink", "MB/s", higher_is_better=True)
                rate = Metric(f"{key}.lines", f"{tag}: lines landed per second", "1/s",
                              higher_is_better=True)
                dropped = Metric(f"{key}.dropped", f"{tag}: lines dropped (circus-sd's count)",
                                 "%")
                lost = Metric(f"{key}.missing", f"{tag}: lines missing", "%")
                cpu = Metric(f"{key}.cpu", f"{tag}: arbiter CPU per MB", "CPU s/MB")
                jcpu = Metric(f"{key}.journald_cpu", f"{tag}: journald's CPU per MB", "CPU s/MB")
                busy = Metric(f"{key}.journald_busy", f"{tag}: journald's CPU during the run",
                              "% core")
                if reason is not None:
                    for metric in (mbps, cpu):
                        r.note(metric, who, f"n/a ({reason})")
                    continue
                for _ in range(p.log_reps):
                    with self.attempt(f"{who} journald {sink} {mode}", (mbps, who)):
                        assert isinstance(sup, CircusLike)
                        got = journal_sink.measure(sup, self.child, self.base, sink, mode,
                                                   LOG_WRITERS, p.journal_lines, timeout=120)
                        expected = got.check.expected_lines
                        r.add(mbps, who, got.mb_per_s)
                        r.add(rate, who, got.lines_per_s)
                        if got.dropped_lines is None:
                            r.note(dropped, who, "not counted (direct)")
                        else:
                            r.add(dropped, who, 100 * got.dropped_lines / expected)
                        r.add(lost, who, 100 * got.check.missing / expected)
                        r.add(cpu, who, got.arbiter_cpu_s_per_mb)
                        r.add(jcpu, who, got.journald_cpu_s_per_mb)
                        r.add(busy, who, 100 * got.journald_busy)
                        if got.check.torn:
                            self.finding(f"journald {sink} {mode}: {got.check.torn} entries "
                                         "were not one whole line")

    def live_reexec(self, sup: Supervisor, n: int) -> None:
        """circus-sd's live re-execution (bench/reexec.py): `reexec` with N processes and a
        writer running; the peers have no such thing."""
        p, r, who = self.plan, self.results, sup.name
        key = f"reexec.{{}}.{n}"
        wall = Metric(key.format("wall"), "reexec: sent → new program answers", "s")
        reply = Metric(key.format("reply"), "reexec: sent → reply (check included)", "s")
        logged = Metric(key.format("logged"), "reexec: arbiter's re-executing → re-executed",
                        "s")
        stall = Metric(key.format("stall"), "reexec: output stall (longest line delay)", "s")
        grew = Metric(key.format("file_gap"), "reexec: longest time the file did not grow", "s")
        gap = Metric(key.format("stamp_gap"), "reexec: largest gap between line stamps", "s")
        base = Metric(key.format("baseline"), "reexec: longest line delay, no switch", "s")
        changed = Metric(key.format("pids_changed"), "reexec: pids changed after all", "count")
        lost = Metric(key.format("lines_lost"), "reexec: writer's lines lost/duplicated", "count")
        respawned = Metric(key.format("respawn"), "reexec: then kill -9 → replaced", "ms")
        stopped = Metric(key.format("stop"), "reexec: then SIGTERM → daemon exit", "s")
        every = (wall, reply, logged, stall, grew, gap, base, changed, lost, respawned, stopped)
        if who != "circus-sd":
            for metric in every:
                r.note(metric, who, "no such thing")
            return
        if not self.caps[who]["control"]:
            for metric in every:
                r.note(metric, who, NEEDS_CONTROL)
            return
        with self.attempt(f"{who} reexec N={n}", (wall, who)):
            assert isinstance(sup, CircusLike)
            got = reexec.measure(sup, self.child, self.base, n, p.reexec_calls, timeout=60)
            r.add(wall, who, *(s.wall for s in got.switches))
            r.add(reply, who, *(s.reply for s in got.switches))
            spans = [s.logged for s in got.switches if s.logged is not None]
            if spans:
                r.add(logged, who, *spans)
            else:
                r.note(logged, who, "log lines not found")
            r.add(stall, who, *(s.stall for s in got.switches))
            r.add(grew, who, *(s.file_gap for s in got.switches))
            r.add(gap, who, *(s.stamp_gap for s in got.switches))
            r.add(base, who, got.baseline_stall)
            r.add(changed, who, got.pids_changed)
            r.add(lost, who, got.lines_lost + got.lines_duplicated)
            r.add(respawned, who, got.respawn * 1000)
            r.add(stopped, who, got.stop["daemon_exit"])
            r.extra.setdefault("reexec", {})[str(n)] = dataclasses.asdict(got)
            if got.pids_changed or got.processes != n + 1:
                self.finding(f"reexec N={n}: {got.pids_changed} pid(s) changed, "
                             f"{got.processes} process(es) listed after, {n + 1} expected")
            if got.lines_lost or got.lines_duplicated or got.lines_garbled:
                self.finding(f"reexec N={n}: writer's lines {got.lines_lost} lost, "
                             f"{got.lines_duplicated} duplicated, {got.lines_garbled} garbled")

    # -- the whole run ---------------------------------------------------------------------------

    def all(self) -> None:
        p = self.plan
        if "machine" in p.workloads:
            with deadline_alarm(300):
                self.machine_limits()
        for sup in self.supervisors:
            self.say(f"probing {sup.name}")
            with self.attempt(f"probe {sup.name}"), deadline_alarm(60):
                self.caps[sup.name] = self.probe(sup)
            self.caps.setdefault(sup.name, {"control": False, "streams": False})
            self.say(f"  {sup.name}: {self.caps[sup.name]}")
        self.results.meta["capabilities"] = self.caps
        if "spawn" in p.workloads:
            for n in p.ns:
                reps = p.reps if n < 1000 else p.reps_large
                for rep in range(reps):
                    # Interleaved, so that a slow moment of the machine hits all three alike.
                    for sup in self.supervisors:
                        self.say(f"{sup.name}: N={n} start/stop {rep + 1}/{reps}")
                        with deadline_alarm(300):
                            self.spawn_stop(sup, n, first=rep == 0)
        if "command" in p.workloads:
            for n in p.ns:
                for sup in self.supervisors:
                    self.say(f"{sup.name}: N={n} `start` command")
                    with deadline_alarm(300):
                        self.command_start(sup, n)
        if "log" in p.workloads:
            with deadline_alarm(600):
                self.machine_logs()
            for sup in self.supervisors:
                self.say(f"{sup.name}: log throughput")
                with deadline_alarm(600):
                    self.logs(sup)
                if sup.name == "circus-sd":
                    with deadline_alarm(300):
                        self.journal_logs(sup)
        if "pylog" in p.workloads:
            with deadline_alarm(1200):
                self.py_logs()
        if "reexec" in p.workloads:
            for n in p.reexec_ns:
                for sup in self.supervisors:
                    self.say(f"{sup.name}: N={n} reexec x{p.reexec_calls}")
                    with deadline_alarm(300):
                        self.live_reexec(sup, n)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def machine_info() -> dict[str, object]:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": load,
        "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--child", required=True, help="the compiled bench/child.c")
    parser.add_argument("--project-venv", default=".venv")
    parser.add_argument("--results", default="bench/results")
    parser.add_argument("--from-json", metavar="PATH",
                        help="run nothing: print (and plot) a saved run again")
    args = parser.parse_args(argv)
    if args.from_json:
        return reprint(args.from_json)
    plan = Plan.from_env()
    child = os.path.abspath(args.child)
    project_venv = os.path.abspath(args.project_venv)
    bench_venv = os.path.abspath(sys.prefix)

    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C, through every finally: nothing stays behind.
    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    become_subreaper()
    seed = int(time.time())
    sd_version = subprocess.run([os.path.join(project_venv, "bin", "circus-sd"), "--version"],
                                capture_output=True, text=True, check=False).stdout.strip()
    meta: dict[str, object] = {
        "t0": time.monotonic(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": plan.quick,
        "plan": {k: (sorted(v) if isinstance(v, frozenset) else v)
                 for k, v in dataclasses.asdict(plan).items()},
        "seed": seed,
        "machine": machine_info(),
        "versions": {"circus-sd": sd_version, "circus": _version("circus"),
                     "supervisor": _version("supervisor"), "pyzmq": _version("pyzmq"),
                     "tornado": _version("tornado"), "psutil": _version("psutil")},
    }
    results = Results(meta)
    supervisors = [s for s in all_supervisors(project_venv, bench_venv)
                   if s.name in plan.supervisors]
    base = tempfile.mkdtemp(prefix="csb-", dir="/tmp")  # short: ipc:// paths have 107 bytes
    bench = Bench(plan, supervisors, child, base, results, seed, args.results)
    started = float(meta["t0"])  # type: ignore[arg-type]  # Bench.say reads it meanwhile

    def keep() -> None:
        del meta["t0"]  # monotonic: means nothing in the results
        write_outputs(results, args.results, plan)

    return measure_and_keep(bench.all, bench.say, meta, base, started, keep)


def measure_and_keep(
    measure: Callable[[], None],
    say: Callable[[str], None],
    meta: dict[str, object],
    base: str,
    started: float,
    keep: Callable[[], None],
) -> int:
    """Run the measurements; interrupted (^C) or not, the machine is cleaned up (orphans
    reaped, `base` removed), the run's duration and load at its end are noted in `meta`, and
    `keep` writes what was measured. The exit status."""
    status = 0
    try:
        measure()
    except KeyboardInterrupt as exc:
        say(f"interrupted ({exc}): writing what was measured")
        meta["interrupted"] = True
        status = 130
    finally:
        reap_orphans()
        shutil.rmtree(base, ignore_errors=True)
        meta["duration_s"] = round(time.monotonic() - started, 1)
        with open("/proc/loadavg") as f:
            meta["machine"]["loadavg_end"] = f.read().split()[:3]  # type: ignore[index]
        keep()
    return status


def reprint(path: str) -> int:
    results = load(path)
    base = path.removesuffix(".json")
    ns = sorted({int(k.rsplit(".", 1)[1]) for k in results.metrics
                 if k.startswith("spawn.daemon.")})
    if plot(results, base + ".png", ns):
        print(f"plot: {base}.png")
    print(_header(results) + "\n\n" + results.table())
    with open(base + ".md", "w") as f:
        f.write(_header(results) + "\n\n" + results.table(markdown=True) + "\n")
    return 0


def _header(results: Results) -> str:
    info = results.meta["machine"]
    kind = "quick" if results.meta.get("quick") else "full"
    if results.meta.get("interrupted"):
        kind += ", INTERRUPTED"
    return (f"circus-sd benchmarks ({kind}, {results.meta['started']}, "
            f"{results.meta.get('duration_s')} s): {info['nproc']} x {info['cpu']}, "
            f"kernel {info['kernel']}, load {' '.join(info['loadavg_start'])} → "
            f"{' '.join(info.get('loadavg_end', []))}\n"
            "median [min-max] over repetitions; ↑ = higher is better; "
            "ratios: circus-sd / the other, on medians")


def write_outputs(results: Results, directory: str, plan: Plan) -> None:
    os.makedirs(directory, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    kind = "quick" if plan.quick else "full"
    if results.meta.get("interrupted"):
        kind += "-interrupted"
    base = os.path.join(directory, f"bench-{kind}-{stamp}")
    dump(results, base + ".json")
    table = results.table()
    header = _header(results)
    with open(base + ".txt", "w") as f:
        f.write(header + "\n\n" + table + "\n")
    with open(base + ".md", "w") as f:
        f.write(header + "\n\n" + results.table(markdown=True) + "\n")
    for ext in (".json", ".txt", ".md"):
        shutil.copyfile(base + ext, os.path.join(directory, f"latest-{kind}{ext}"))
    if plot(results, base + ".png", list(plan.ns)):
        shutil.copyfile(base + ".png", os.path.join(directory, f"latest-{kind}.png"))
        print(f"plot: {base}.png")
    findings = "".join(f"\n- {text}" for text in results.extra.get("findings", []))
    if findings:
        with open(base + ".txt", "a") as f:
            f.write("\nnotes:" + findings + "\n")
    print(header + "\n\n" + table + ("\n\nnotes:" + findings if findings else ""))
    print(f"\nresults: {base}.json")
