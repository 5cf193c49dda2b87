"""CPU figures of `stats` as an operator reads them: a burning child of a shell shows its burn."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from arbiter_harness import Circus, wait_until
from control_helpers import Clients, clients, control_endpoint, watcher_sections

pytestmark = pytest.mark.timeout(60)

# The watcher's process is a shell that only waits; its child spins.
BURNING_TREE = "sh -c 'while :; do :; done & wait'"


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


def _children(reply: dict[str, Any], pid: int) -> list[dict[str, Any]]:
    children: list[dict[str, Any]] = reply["info"][str(pid)]["children"]
    return children


def test_a_busy_descendant_shows_its_cpu_at_the_first_and_every_later_stats(
    circus: Circus, zmq_clients: Clients
) -> None:
    circus.start(
        circus.write_config(watcher_sections(circus, {"burn": {"cmd": BURNING_TREE}}))
    )
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    wait_until(lambda: ctl.ok("list", name="burn")["pids"], 10.0, "the watcher's process")
    [shell] = ctl.ok("list", name="burn")["pids"]
    # The spinning child exists once the shell has forked it.
    wait_until(
        lambda: _children(ctl.ok("stats", name="burn", extended=True), shell),
        10.0,
        "the shell's child",
    )
    # A spinning loop takes a good share of a core even on a busy machine; a sampler without a
    # baseline reported 0.0 at every call. Each figure covers the time since the previous call:
    # the calls are spaced to measure over a few scheduler ticks.
    samples = []
    for _call in range(3):
        time.sleep(0.3)
        [child] = _children(ctl.ok("stats", name="burn", extended=True), shell)
        samples.append(child["cpu"])
    assert all(sample > 5.0 for sample in samples), samples
    assert child["cpu_seconds"] > 0
    # The shell itself only waits.
    assert ctl.ok("stats", name="burn")["info"][str(shell)]["cpu"] < 5.0
