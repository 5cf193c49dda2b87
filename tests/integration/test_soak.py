"""Soak: a realistic configuration (long runners, crashers, a crash loop in backoff, output into
rotating files and the default stream, readiness with a watchdog, a monitoring client, resizes)
for SOAK_SECONDS (60 by default; `make soak` runs 600).

Sampled every second: the arbiter's RSS, open descriptors and threads; after a warm-up they must
stay flat (the slope of a least-squares line, against the thresholds below). Every 50 ms: the
arbiter's zombie children; none may stay a zombie longer than 1 s. At the end the processes are
exactly the configured ones, and after the stop none is left (the `circus` fixture). The figures
go to .build/soak.json and are printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from arbiter_harness import CHILD_PYTHON, CHILDREN, ROOT, Arbiter, Circus, child_command, wait_until
from background import Background
from control_helpers import Clients, ControlClient, clients, control_endpoint

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
WARM_UP = min(15.0, SOAK_SECONDS / 4)  # seconds not fitted: first allocations, first rotations
# Flat means: at most this much growth per hour, fitted over the measured window.
RSS_SLOPE_MAX_MB_PER_HOUR = 30.0 if SOAK_SECONDS >= 300 else 120.0
FDS_SLOPE_MAX_PER_HOUR = 30.0 if SOAK_SECONDS >= 300 else 120.0
THREADS_SPREAD_MAX = 2
ZOMBIE_MAX_SECONDS = 1.0
RESULTS = ROOT / ".build" / "soak.json"

pytestmark = pytest.mark.timeout(SOAK_SECONDS + 120)

COUNTS = {"web": 4, "crashers": 8, "crashloop": 1, "writer": 2, "chatty": 1, "ready": 2}


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


def _config(circus: Circus) -> str:
    tmp = circus.tmp
    crash = "import os, time; time.sleep(2 + os.getpid() % 7); os._exit(3)"
    chatty = ("import itertools, time; [(print('chatty line', n, flush=True), time.sleep(0.05))"
              " for n in itertools.count()]")
    notifier = f"{CHILD_PYTHON} -S -E {CHILDREN / 'notifier.py'} 0.1 -1 0.5 {tmp} ready"
    return f"""
        [watcher:web]
        cmd = {child_command("report.py", tmp, "web")}
        numprocesses = {COUNTS["web"]}

        [watcher:crashers]
        cmd = {CHILD_PYTHON} -S -E -c {shlex.quote(crash)} {tmp} crashers
        numprocesses = {COUNTS["crashers"]}
        check_flapping = false

        [watcher:crashloop]
        cmd = /bin/sh -c 'exit 1' crashloop {tmp}
        backoff_max = 2
        check_flapping = false

        [watcher:writer]
        cmd = {child_command("firehose.py", tmp, "writer", "500000")}
        numprocesses = {COUNTS["writer"]}
        stdout_stream.filename = {tmp}/writer.log
        stdout_stream.max_bytes = 5000000
        stdout_stream.backup_count = 2

        [watcher:chatty]
        cmd = {CHILD_PYTHON} -S -E -c {shlex.quote(chatty)} {tmp} chatty
        stdout_stream.class = TimedRotatingFileStream
        stdout_stream.filename = {tmp}/chatty.log
        stdout_stream.rotate_when = S
        stdout_stream.rotate_interval = 10
        stdout_stream.backup_count = 2

        [watcher:ready]
        cmd = {notifier}
        numprocesses = {COUNTS["ready"]}
        notify = true
        watchdog_sec = 3
        """


class Sampler(Background):
    """The arbiter's figures every second; its zombie children every 50 ms."""

    def __init__(self, arbiter: Arbiter) -> None:
        super().__init__("sampler")
        self.arbiter = arbiter
        self.samples: list[dict[str, float]] = []
        self.zombie_seen: dict[int, float] = {}  # pid -> first seen as a zombie
        self.longest_zombie = 0.0
        self.zombies = 0
        self.started = time.monotonic()

    def loop(self, stop: threading.Event) -> None:
        next_sample = time.monotonic()
        while not stop.wait(0.05):
            self._zombies()
            if time.monotonic() >= next_sample:
                next_sample += 1.0
                self._sample()

    def _zombies(self) -> None:
        now = time.monotonic()
        current = set()
        for child in self.arbiter.process.children():
            with contextlib.suppress(psutil.Error):
                if child.status() == psutil.STATUS_ZOMBIE:
                    current.add(child.pid)
        for pid in current - set(self.zombie_seen):
            self.zombie_seen[pid] = now
            self.zombies += 1
        for pid in set(self.zombie_seen) - current:
            self.longest_zombie = max(self.longest_zombie, now - self.zombie_seen.pop(pid))
        for first in self.zombie_seen.values():
            self.longest_zombie = max(self.longest_zombie, now - first)

    def _sample(self) -> None:
        process = self.arbiter.process
        with process.oneshot():
            self.samples.append({
                "t": time.monotonic() - self.started,
                "rss_mb": process.memory_info().rss / 1e6,
                "fds": float(process.num_fds()),
                "threads": float(process.num_threads()),
                "cpu_s": sum(process.cpu_times()[:2]),
            })


def _slope_per_hour(samples: list[dict[str, float]], key: str) -> float:
    """The least-squares slope of `key` against time, per hour."""
    times = [s["t"] for s in samples]
    values = [s[key] for s in samples]
    mean_t, mean_v = sum(times) / len(times), sum(values) / len(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / spread
    return slope * 3600


class Operator(Background):
    """What a monitoring tool and an operator do: status and stats every second, a resize
    (up, then down again) every 5 s. Every request must be answered without an error."""

    def __init__(self, ctl: ControlClient) -> None:
        super().__init__("operator")
        self.ctl = ctl
        self.requests = 0

    def loop(self, stop: threading.Event) -> None:
        rng = random.Random(7)
        tick = 0
        while not stop.wait(1.0):
            tick += 1
            self.ctl.ok("status", timeout=10)
            self.ctl.ok("stats", name=rng.choice(["web", "writer", "ready"]), timeout=10)
            self.requests += 2
            if tick % 5 == 0:
                self.ctl.ok("incr", name="web", waiting=True, timeout=10)
                self.ctl.ok("decr", name="web", waiting=True, timeout=10)
                self.requests += 2


def test_soak_keeps_memory_descriptors_and_threads_flat(
    circus: Circus, zmq_clients: Clients, capsys: pytest.CaptureFixture[str]
) -> None:
    arbiter = circus.start(circus.write_config(_config(circus)))
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    sampler = Sampler(arbiter)
    operator = Operator(zmq_clients.control(control_endpoint(circus.tmp)))
    sampler.start()
    operator.start()
    end = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < end and arbiter.running():
        # The soak is the measurement: look in every 5 s until it is over.
        look_at = min(end, time.monotonic() + 5.0)
        wait_until(lambda at=look_at: time.monotonic() >= at, 6.0, "the next look")
    assert operator.stop(30) and sampler.stop(), "a background thread is stuck"
    assert arbiter.running(), arbiter.log_tail()
    assert not sampler.problems and not operator.problems, sampler.problems + operator.problems

    # The processes are exactly the configured ones (the crash loop's one may be in backoff).
    def agreed() -> bool:
        listed = {name: ctl.ok("list", name=name)["pids"] for name in COUNTS}
        steady = all(len(listed[n]) == c for n, c in COUNTS.items() if n != "crashloop")
        everyone = {pid for pids in listed.values() for pid in pids}
        return steady and everyone == arbiter.worker_pids()

    wait_until(agreed, 15, "the processes to be exactly the configured ones", arbiter.log_tail)

    measured = [s for s in sampler.samples if s["t"] >= WARM_UP]
    assert len(measured) >= SOAK_SECONDS - WARM_UP - 5, f"only {len(measured)} samples"
    log = arbiter.log()
    figures: dict[str, Any] = {
        "seconds": round(SOAK_SECONDS),
        "samples": len(sampler.samples),
        "rss_mb_start": round(measured[0]["rss_mb"], 1),
        "rss_mb_end": round(measured[-1]["rss_mb"], 1),
        "rss_mb_max": round(max(s["rss_mb"] for s in sampler.samples), 1),
        "rss_slope_mb_per_hour": round(_slope_per_hour(measured, "rss_mb"), 2),
        "fds_start": int(measured[0]["fds"]),
        "fds_end": int(measured[-1]["fds"]),
        "fds_slope_per_hour": round(_slope_per_hour(measured, "fds"), 2),
        "threads_min": int(min(s["threads"] for s in measured)),
        "threads_max": int(max(s["threads"] for s in measured)),
        "arbiter_cpu_percent": round(100 * (measured[-1]["cpu_s"] - measured[0]["cpu_s"])
                                     / (measured[-1]["t"] - measured[0]["t"]), 2),
        "zombies_seen": sampler.zombies,
        "longest_zombie_s": round(sampler.longest_zombie, 3),
        "crashes": log.count("exited with status 3"),
        "crash_loop_restarts": log.count("crashloop[1] pid"),
        "requests": operator.requests,
        "thresholds": {
            "rss_slope_mb_per_hour": RSS_SLOPE_MAX_MB_PER_HOUR,
            "fds_slope_per_hour": FDS_SLOPE_MAX_PER_HOUR,
            "threads_spread": THREADS_SPREAD_MAX,
            "zombie_s": ZOMBIE_MAX_SECONDS,
        },
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    with capsys.disabled():
        print(f"\nsoak ({RESULTS.relative_to(ROOT)}): "
              + ", ".join(f"{k} {v}" for k, v in figures.items() if k != "thresholds"))

    assert figures["rss_slope_mb_per_hour"] <= RSS_SLOPE_MAX_MB_PER_HOUR, figures
    assert figures["fds_slope_per_hour"] <= FDS_SLOPE_MAX_PER_HOUR, figures
    assert figures["threads_max"] - figures["threads_min"] <= THREADS_SPREAD_MAX, figures
    assert sampler.longest_zombie <= ZOMBIE_MAX_SECONDS, figures
    assert figures["crashes"] >= SOAK_SECONDS / 8 * COUNTS["crashers"] / 2, "too few crashes"
    assert "Traceback" not in log
