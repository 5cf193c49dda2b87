"""Many clients at once while processes crash and get killed: no lost reply, no deadlock, and the
watchers' bookkeeping agrees with the kernel at the end."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from arbiter_harness import Circus, wait_until
from control_helpers import (
    Clients,
    ControlClient,
    clients,
    control_endpoint,
    real_pids,
    wait_count,
    watcher_sections,
)

pytestmark = pytest.mark.timeout(60)

CLIENTS = 50
STORM_SECONDS = 3.0
PIPELINE = 3  # requests each client has in flight at once
REPLY_DEADLINE = 15.0
RESIZED = ("alpha", "beta")


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


def _requests(rng: random.Random) -> list[dict[str, Any]]:
    """One client's next batch: mostly reads, some resizes (an incr is followed by a decr)."""
    batch = []
    for _ in range(PIPELINE):
        name = rng.choice(RESIZED)
        kind = rng.choice(["status", "status", "list", "stats", "get", "resize"])
        if kind == "resize":
            batch.append({"command": "incr", "properties": {"name": name, "waiting": True}})
            batch.append({"command": "decr", "properties": {"name": name, "waiting": True}})
        elif kind == "get":
            batch.append({"command": "get", "properties": {"name": name, "keys": ["numprocesses"]}})
        elif kind == "status":
            batch.append({"command": "status", "properties": rng.choice([{}, {"name": name}])})
        else:
            batch.append({"command": kind, "properties": rng.choice([{}, {"name": name}])})
    return batch


class Storm:
    """What every client thread sent and got back."""

    def __init__(self) -> None:
        self.sent: set[str] = set()
        self.answered: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []
        self.lock = threading.Lock()

    def client(self, ctl: ControlClient, seed: int, until: float) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < until:
                pending: dict[str, str] = {}
                for request in _requests(rng):
                    request_id = uuid.uuid4().hex
                    pending[request_id] = request["command"]
                    with self.lock:
                        self.sent.add(request_id)
                    ctl.send({**request, "id": request_id})
                while pending:
                    reply = ctl.receive(REPLY_DEADLINE)
                    command = pending.pop(reply.get("id"), None)
                    if command is None:
                        raise AssertionError(f"a reply to no pending request: {reply}")
                    with self.lock:
                        self.answered[reply["id"]] = reply
                    if reply["status"] == "error":
                        raise AssertionError(f"{command} failed: {reply}")
        except Exception as exc:  # reported by the test, in the main thread
            with self.lock:
                self.problems.append(f"client {seed}: {type(exc).__name__}: {exc}")


def test_fifty_clients_while_processes_crash_and_get_killed(
    circus: Circus, zmq_clients: Clients
) -> None:
    steady = {"numprocesses": 2, "min_uptime": 0, "check_flapping": "false",
              "graceful_timeout": 2}
    config = circus.write_config(watcher_sections(circus, {
        "alpha": steady,
        "beta": steady,
        "crash": {"cmd": "/bin/sh -c 'sleep 0.02; exit 1' crash", "backoff_initial": 0.01,
                  "backoff_max": 0.05, "check_flapping": "false"},
    }))
    arbiter = circus.start(config)
    for name in RESIZED:
        wait_count(arbiter, name, 2)
    sockets = [zmq_clients.control(control_endpoint(circus.tmp)) for _ in range(CLIENTS)]
    storm = Storm()
    stop_killing = threading.Event()
    killed: list[int] = []

    def kill_loop() -> None:
        rng = random.Random(0)
        while not stop_killing.wait(0.03):
            pids = real_pids(arbiter, "alpha") + real_pids(arbiter, "beta")
            if pids:
                victim = rng.choice(pids)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)

    until = time.monotonic() + STORM_SECONDS
    threads = [
        threading.Thread(target=storm.client, args=(ctl, seed, until), daemon=True)
        for seed, ctl in enumerate(sockets)
    ]
    killer = threading.Thread(target=kill_loop, daemon=True)
    killer.start()
    for thread in threads:
        thread.start()
    deadline = until + REPLY_DEADLINE + 5
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stop_killing.set()
    killer.join(5)

    assert not [t for t in threads if t.is_alive()], "client threads still waiting: a deadlock"
    assert not storm.problems, "\n".join(storm.problems[:10])
    assert storm.sent and storm.sent == set(storm.answered), "every request got its reply"
    assert len(storm.sent) > CLIENTS * PIPELINE, f"only {len(storm.sent)} requests were sent"
    assert len(killed) > 10, f"the kill loop killed only {len(killed)} processes"
    crashes = arbiter.count(r"crash\[1\] pid \d+ exited with status 1")
    assert crashes >= 3, f"the crash loop ran only {crashes} times"

    # Quiet again: each watcher's target, process records and real processes agree.
    ctl = sockets[0]

    def agreed() -> bool:
        for name in RESIZED:
            target = ctl.ok("get", name=name, keys=["numprocesses"])["options"]["numprocesses"]
            records = ctl.ok("numprocesses", name=name)["numprocesses"]
            listed = ctl.ok("list", name=name)["pids"]
            if not target == records == len(listed) or listed != real_pids(arbiter, name):
                return False
        return True

    wait_until(agreed, 10, "numprocesses and the real processes to agree", arbiter.log_tail)
    ctl.ok("stop", name="crash", waiting=True)
    assert ctl.ok("numprocesses", name="crash")["numprocesses"] == 0
    assert real_pids(arbiter, "crash") == []
    assert ctl.ok("status")["statuses"] == {"alpha": "active", "beta": "active", "crash": "stopped"}
    assert "Traceback" not in arbiter.log()
