"""The events endpoint as a subscriber to some topics meets it: every event on its topics and
nothing else, from the moment its subscription is live, also when it subscribes to a topic that
already had events nobody followed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from arbiter_harness import Circus
from control_helpers import Clients, EventStream, clients, control_endpoint, events_endpoint

pytestmark = pytest.mark.timeout(90)

N = 50


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


def _payloads(events: EventStream, topic: str, start: int = 0) -> list[dict[str, Any]]:
    return [payload for got, payload in events.seen[start:] if got == topic]


def _collect_pids(events: EventStream, topic: str, pids: set[int], start: int) -> None:
    deadline = time.monotonic() + 20
    while {p["process_pid"] for p in _payloads(events, topic, start)} != pids:
        assert time.monotonic() < deadline, (
            f"{topic}: {len(_payloads(events, topic, start))} events, {len(pids)} processes"
        )
        events.drain(0.05)


def test_a_subscriber_gets_every_event_of_its_topics_and_only_those(
    circus: Circus, zmq_clients: Clients
) -> None:
    config = circus.write_config(f"""
        [watcher:a]
        cmd = /bin/sleep
        args = 300
        numprocesses = {N}

        [watcher:b]
        cmd = /bin/sleep
        args = 300
        numprocesses = {N}
    """)
    circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    events = zmq_clients.events(events_endpoint(circus.tmp), topics=("watcher.a.",))
    mark = events.sync(ctl, "a")
    a_pids = set(ctl.ok("list", name="a")["pids"])
    assert len(a_pids) == N

    # b's events go to nobody; a's to us, every one.
    ctl.ok("stop", name="b", waiting=True)
    ctl.ok("stop", name="a", waiting=True)
    _collect_pids(events, "watcher.a.reap", a_pids, mark)
    assert {p["process_pid"] for p in _payloads(events, "watcher.a.kill", mark)} == a_pids
    assert not [t for t in events.topics() if not t.startswith("watcher.a.")]

    # A topic that had events nobody followed: once subscribed, all of its events come.
    events.socket.subscribe(b"watcher.b.")
    mark = events.sync(ctl, "b")
    ctl.ok("start", name="b", waiting=True)
    b_pids = set(ctl.ok("list", name="b")["pids"])
    assert len(b_pids) == N
    _collect_pids(events, "watcher.b.spawn", b_pids, mark)
    ctl.ok("stop", name="b", waiting=True)
    _collect_pids(events, "watcher.b.reap", b_pids, mark)
    assert not [t for t in events.topics(mark) if t.split(".")[1] not in ("a", "b")]
