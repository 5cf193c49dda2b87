"""Load: 1000 processes in 20 watchers, about 5 % of them crashing every second, 20 clients
issuing commands and 50 MB/s of output into file streams, for LOAD_SECONDS (30 by default).

Checked: every request gets its reply, and no error; at the end each watcher runs exactly its
numprocesses, the arbiter's lists match the kernel's children, and the events agree with both
(per watcher, the pids of spawn events minus those of reap events are exactly the running ones;
every crash we caused has its reap event with the right signal); every line the writers wrote is
in its file or was reported dropped. The figures go to .build/load.json.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import signal
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq
from arbiter_harness import ROOT, Arbiter, Circus, child_command, wait_until
from background import Background
from control_helpers import (
    Clients,
    ControlClient,
    clients,
    control_endpoint,
    events_endpoint,
)

LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "30"))
SLEEPERS, SLEEPER_PROCESSES = 18, 55  # 990 processes that crash
WRITERS, WRITER_PROCESSES = 2, 5  # 10 processes writing 5 MB/s each
WRITE_RATE = 5_000_000
CRASH_RATE = 0.05  # of the processes, per second
CLIENTS, CLIENT_RATE = 20, 10  # requests per second per client
REPLY_DEADLINE = 15.0
OLD_ENOUGH = 2.0  # seconds: only processes that ran this long crash (not failed starts)
CRASH_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV, signal.SIGABRT, signal.SIGINT)
RESULTS = ROOT / ".build" / "load.json"

pytestmark = pytest.mark.timeout(LOAD_SECONDS + 150)


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


def sleeper_names() -> list[str]:
    return [f"s{i:02d}" for i in range(SLEEPERS)]


def writer_names() -> list[str]:
    return [f"w{i}" for i in range(WRITERS)]


def _config(circus: Circus) -> str:
    text = "[watcher:anchor]\ncmd = sleep 100000\n\n"
    for name in sleeper_names():
        text += (f"[watcher:{name}]\ncmd = sleep 100000\nnumprocesses = {SLEEPER_PROCESSES}\n"
                 "autostart = false\ncheck_flapping = false\nrlimit_core = 0\n"
                 "graceful_timeout = 5\n\n")
    for name in writer_names():
        cmd = child_command("firehose.py", circus.tmp, name, str(WRITE_RATE))
        text += (f"[watcher:{name}]\ncmd = {cmd}\nnumprocesses = {WRITER_PROCESSES}\n"
                 f"autostart = false\nstdout_stream.filename = {circus.tmp}/{name}.log\n"
                 "graceful_timeout = 5\n\n")
    return text


class EventLog(Background):
    """Every event, taken in by a thread of its own as fast as they come."""

    def __init__(self, context: zmq.Context[Any], endpoint: str) -> None:
        super().__init__("events")
        self.socket: zmq.Socket[bytes] = context.socket(zmq.SUB)
        self.socket.linger = 0
        self.socket.rcvhwm = 0  # unlimited here; the arbiter's side keeps its own
        self.socket.subscribe(b"")
        self.socket.connect(endpoint)
        self.events: list[tuple[str, dict[str, Any]]] = []

    def loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self.socket.poll(50):
                while True:
                    try:
                        topic, body = self.socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.events.append((topic.decode(), json.loads(body)))

    def close(self) -> None:
        self.stop(5)
        self.socket.close(linger=0)

    def of(self, watcher: str, event: str) -> list[dict[str, Any]]:
        topic = f"watcher.{watcher}.{event}"
        return [payload for got, payload in list(self.events) if got == topic]


class Crasher(Background):
    """Kills CRASH_RATE of the sleepers' processes per second, each once, with rotating
    signals; only processes that ran OLD_ENOUGH (a crash, not a failed start)."""

    def __init__(self, arbiter: Arbiter, processes: int) -> None:
        super().__init__("crasher")
        self.arbiter = arbiter
        self.interval = 1.0 / (CRASH_RATE * processes)
        self.killed: dict[int, int] = {}  # pid -> signal

    def _candidates(self) -> list[int]:
        now = time.time()
        found = []
        for process in self.arbiter.workers():
            with contextlib.suppress(psutil.Error):
                if process.name() == "sleep" and now - process.create_time() > OLD_ENOUGH:
                    found.append(process.pid)
        return found

    def loop(self, stop: threading.Event) -> None:
        rng = random.Random(1)
        candidates: list[int] = []
        refreshed = 0.0
        turn = 0
        next_kill = time.monotonic()
        while not stop.wait(max(0.0, next_kill - time.monotonic())):
            next_kill += self.interval
            if time.monotonic() - refreshed > 1.0:
                candidates = [p for p in self._candidates() if p not in self.killed]
                rng.shuffle(candidates)
                refreshed = time.monotonic()
            if not candidates:
                continue
            pid = candidates.pop()
            signum = CRASH_SIGNALS[turn % len(CRASH_SIGNALS)]
            turn += 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
                self.killed[pid] = signum


class Tally:
    """Requests sent and answered by all the clients, and how long each reply took."""

    def __init__(self) -> None:
        self.sent = 0
        self.answered = 0
        self.latencies: list[float] = []
        self.lock = threading.Lock()


class Client(Background):
    """One client with its own DEALER socket, sending CLIENT_RATE requests a second and
    waiting for each reply; an error reply or a missing one ends it (a problem)."""

    def __init__(self, ctl: ControlClient, seed: int, names: list[str], tally: Tally) -> None:
        super().__init__(f"client {seed}")
        self.ctl, self.seed, self.names, self.tally = ctl, seed, names, tally

    def _requests(self, rng: random.Random) -> list[dict[str, Any]]:
        name = rng.choice(self.names)
        kind = rng.choice(["status", "list", "numprocesses", "get", "resize", "all", "options"])
        if kind == "resize":
            return [{"command": "incr", "properties": {"name": name, "waiting": True}},
                    {"command": "decr", "properties": {"name": name, "waiting": True}}]
        if kind == "get":
            return [{"command": "get", "properties": {"name": name, "keys": ["numprocesses"]}}]
        if kind == "all":
            return [{"command": "status", "properties": {}}]
        return [{"command": kind, "properties": {"name": name}}]

    def loop(self, stop: threading.Event) -> None:
        rng = random.Random(self.seed)
        tally = self.tally
        next_at = time.monotonic() + rng.random() / CLIENT_RATE
        while not stop.wait(max(0.0, next_at - time.monotonic())):
            for request in self._requests(rng):
                request_id = uuid.uuid4().hex
                with tally.lock:
                    tally.sent += 1
                started = time.monotonic()
                self.ctl.send({**request, "id": request_id})
                reply = self.ctl.receive(REPLY_DEADLINE)
                took = time.monotonic() - started
                assert reply.get("id") == request_id, reply
                assert reply["status"] != "error", f"{request}: {reply}"
                with tally.lock:
                    tally.answered += 1
                    tally.latencies.append(took)
            next_at += 1.0 / CLIENT_RATE


LINE = 100  # firehose.py's lines: 100 bytes each, newline included


def _whole_lines(path: Path) -> int:
    """Lines in a writer's file, checking that each is a whole firehose line (its first byte
    `w`, its 100th a newline): a torn or merged line shifts every later one."""
    lines = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(LINE * 65536):
            count = len(chunk) // LINE
            assert len(chunk) % LINE == 0, f"{path.name}: a torn line near line {lines}"
            assert chunk[LINE - 1 :: LINE].count(b"\n") == count, f"{path.name}: a torn line"
            assert chunk[0::LINE].count(b"w") == count, f"{path.name}: a damaged line"
            lines += count
    return lines


def test_a_thousand_processes_crashing_under_twenty_clients_and_50_mb_s(
    circus: Circus, zmq_clients: Clients, capsys: pytest.CaptureFixture[str]
) -> None:
    config = circus.write_config(_config(circus))
    arbiter = circus.start(config)
    events = EventLog(zmq_clients.context, events_endpoint(circus.tmp))
    events.start()
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    wait_until(lambda: _synced(ctl, events), 10, "the events subscription")
    everything = sleeper_names() + writer_names()
    try:
        started = time.monotonic()
        for name in everything:
            ctl.ok("start", name=name, waiting=True, timeout=30)
        up_in = time.monotonic() - started
        processes = SLEEPERS * SLEEPER_PROCESSES + WRITERS * WRITER_PROCESSES + 1
        assert len(arbiter.workers()) == processes

        crasher = Crasher(arbiter, SLEEPERS * SLEEPER_PROCESSES)
        tally = Tally()
        load = [Client(zmq_clients.control(control_endpoint(circus.tmp)), seed,
                       sleeper_names(), tally) for seed in range(CLIENTS)]
        cpu_before, phase_start = _cpu(arbiter), time.monotonic()
        fds_max = rss_max = 0
        crasher.start()
        for client in load:
            client.start()
        phase_end = phase_start + LOAD_SECONDS
        while time.monotonic() < phase_end and arbiter.running():
            # The phase is the measurement: a sample of the arbiter every second until it ends.
            sample_at = min(phase_end, time.monotonic() + 1.0)
            wait_until(lambda at=sample_at: time.monotonic() >= at, 2.0, "the next sample")
            fds_max = max(fds_max, len(os.listdir(f"/proc/{arbiter.pid}/fd")))
            rss_max = max(rss_max, arbiter.process.memory_info().rss)
        crasher.stop()
        for client in load:
            client.ask_to_stop()
        stuck = [client for client in load if not client.stop(REPLY_DEADLINE + 5)]
        phase = time.monotonic() - phase_start
        cpu = _cpu(arbiter) - cpu_before
        fds_max = max(fds_max, len(os.listdir(f"/proc/{arbiter.pid}/fd")))
        rss_max = max(rss_max, arbiter.process.memory_info().rss)
        assert arbiter.running(), arbiter.log_tail()
        assert not stuck, f"{len(stuck)} client threads never got a reply"
        problems = [p for thread in [crasher, *load] for p in thread.problems]
        assert not problems, "\n".join(problems[:10])
        assert tally.sent == tally.answered > CLIENTS * CLIENT_RATE * LOAD_SECONDS * 0.5

        # Quiet again: every watcher at its count, the lists agree with the kernel and events.
        expected = {name: SLEEPER_PROCESSES for name in sleeper_names()}
        expected.update({name: WRITER_PROCESSES for name in writer_names()})
        listed = wait_until(lambda: _agreed(ctl, arbiter, expected), 30,
                            "every watcher at its count, as the kernel sees it")
        wait_until(lambda: _events_agree(events, listed), 10, "the events to agree",
                   lambda: _events_detail(events, listed))
        reaped = {p["process_pid"]: p["exit_code"]
                  for name in ["anchor", *sleeper_names()] for p in events.of(name, "reap")}
        wrong = {pid: (-signum, reaped.get(pid)) for pid, signum in crasher.killed.items()
                 if reaped.get(pid) != -signum}
        assert not wrong, f"crashes without their reap event: {list(wrong.items())[:10]}"

        # Writers stop cleanly; every line they wrote is in its file, or was counted dropped.
        for name in writer_names():
            ctl.ok("stop", name=name, waiting=True, timeout=30)
        lines = _writer_lines(circus, events)
        spawns = sum(len(events.of(n, "spawn")) for n in everything)
        reaps = sum(len(events.of(n, "reap")) for n in everything)
        figures = {
            "processes": processes,
            "watchers": len(everything) + 1,
            "started_in_s": round(up_in, 2),
            "load_seconds": round(phase, 1),
            "crashes": len(crasher.killed),
            "crashes_per_s": round(len(crasher.killed) / phase, 1),
            "spawn_events": spawns,
            "reap_events": reaps,
            "requests": tally.sent,
            "replies": tally.answered,
            "reply_p50_ms": round(statistics.median(tally.latencies) * 1000, 1),
            "reply_p99_ms": round(_percentile(tally.latencies, 0.99) * 1000, 1),
            "reply_max_ms": round(max(tally.latencies) * 1000, 1),
            "output_mb": round(lines["bytes"] / 1e6, 1),
            "output_mb_per_s": round(lines["bytes"] / 1e6 / phase, 1),
            "lines_dropped": lines["dropped"],
            "arbiter_cpu_percent": round(100 * cpu / phase, 1),
            "arbiter_rss_mb_max": round(rss_max / 1e6, 1),
            "arbiter_fds_max": fds_max,
        }
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
        with capsys.disabled():
            print(f"\nload ({RESULTS.relative_to(ROOT)}): "
                  + ", ".join(f"{k} {v}" for k, v in figures.items()))
        assert lines["missing"] == {}, f"lines lost without a count: {lines['missing']}"
        assert figures["crashes_per_s"] >= 0.8 * CRASH_RATE * SLEEPERS * SLEEPER_PROCESSES
        assert "Traceback" not in arbiter.log()
    finally:
        events.close()
        for path in circus.tmp.glob("w*.log*"):
            path.unlink()  # a gigabyte or two


def _cpu(arbiter: Arbiter) -> float:
    times = arbiter.process.cpu_times()
    return float(times.user + times.system)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _synced(ctl: ControlClient, events: EventLog) -> bool:
    """Re-apply a live option of the anchor until its `updated` event arrives (ZMQ drops what
    a SUB misses while it connects)."""
    before = len(events.of("anchor", "updated"))
    ctl.ok("set", name="anchor", options={"graceful_timeout": 30}, waiting=True)
    with contextlib.suppress(AssertionError):
        wait_until(lambda: len(events.of("anchor", "updated")) > before, 0.3, "an event")
        return True
    return False


def _agreed(ctl: ControlClient, arbiter: Arbiter, expected: dict[str, int]
            ) -> dict[str, list[int]] | None:
    """{watcher: pids} once each runs exactly its count and together they are exactly the
    arbiter's live children (the anchor aside)."""
    listed = {name: ctl.ok("list", name=name)["pids"] for name in expected}
    if any(len(listed[name]) != count for name, count in expected.items()):
        return None
    anchor = set(ctl.ok("list", name="anchor")["pids"])
    everyone = [pid for pids in listed.values() for pid in pids]
    if len(set(everyone)) != len(everyone) or set(everyone) | anchor != arbiter.worker_pids():
        return None
    return listed


def _alive_by_events(events: EventLog, name: str) -> collections.Counter[int]:
    spawned = collections.Counter(p["process_pid"] for p in events.of(name, "spawn"))
    spawned.subtract(collections.Counter(p["process_pid"] for p in events.of(name, "reap")))
    return +spawned


def _events_agree(events: EventLog, listed: dict[str, list[int]]) -> bool:
    return all(_alive_by_events(events, name) == collections.Counter(pids)
               for name, pids in listed.items())


def _events_detail(events: EventLog, listed: dict[str, list[int]]) -> str:
    lines = []
    for name, pids in listed.items():
        alive = _alive_by_events(events, name)
        if alive != collections.Counter(pids):
            lines.append(f"{name}: events say {sorted(alive)}, list says {sorted(pids)}")
    return "\n".join(lines[:5])


def _writer_lines(circus: Circus, events: EventLog) -> dict[str, Any]:
    """Lines written (the writers' own counts) against lines in the files plus dropped ones."""

    def sent(name: str) -> dict[str, int]:
        counts = {}
        for path in circus.tmp.glob(f"{name}.*.sent"):
            counts[path.name.split(".")[1]] = sum(int(n) for n in path.read_text().split())
        return counts

    missing: dict[str, int] = {}
    total = dropped_total = 0
    for name in writer_names():
        wait_until(lambda name=name: len(sent(name)) == WRITER_PROCESSES, 10,
                   f"{name}'s writers to report")
        written = sum(sent(name).values())
        path = circus.tmp / f"{name}.log"

        def settled(name: str = name, written: int = written, path: Path = path) -> bool:
            dropped = sum(p["lines"] for p in events.of(name, "dropped"))
            return path.stat().st_size // LINE + dropped >= written

        with contextlib.suppress(AssertionError):
            wait_until(settled, 15, f"{name}'s lines to be written")
        in_file = _whole_lines(path)
        dropped = sum(p["lines"] for p in events.of(name, "dropped"))
        if in_file + dropped != written:
            missing[name] = written - in_file - dropped
        total += in_file * LINE
        dropped_total += dropped
    return {"bytes": total, "dropped": dropped_total, "missing": missing}
