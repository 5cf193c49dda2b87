"""The watchers' timers on shared loop timers: never early, at most a slot late, each once."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from circus_sd.timers import SLOT, Timers


def test_timers_fire_once_in_deadline_order_never_early_at_most_a_slot_late() -> None:
    fired: list[tuple[str, Hashable, float]] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        timers = Timers(lambda name, key: fired.append((name, key, loop.time())))
        timers.attach(loop)
        start = loop.time()
        delays = {("w", ("kill", i)): 0.001 * (i % 7) + 0.01 for i in range(200)}
        for (name, key), delay in delays.items():
            timers.start(name, key, delay)
        timers.start("w", ("kill", 3), 0.05)  # restarted: fires at its new deadline only
        delays[("w", ("kill", 3))] = 0.05
        for i in range(0, 200, 10):  # cancelled: never fire
            timers.cancel("w", ("kill", i))
            del delays[("w", ("kill", i))]
        timers.cancel("w", ("never", "started"))
        await asyncio.sleep(0.1)
        assert sorted((n, k) for n, k, _ in fired) == sorted(delays)
        for name, key, at in fired:
            due = start + delays[(name, key)]
            assert due <= at, (key, at - due)
            assert at - due < SLOT + 0.05, (key, at - due)  # a slot, and the loop's own lag
        assert timers.pending() == []

    asyncio.run(scenario())


def test_a_firing_timer_may_cancel_or_restart_others_of_its_slot() -> None:
    fired: list[Hashable] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        def fire(name: str, key: Hashable) -> None:
            fired.append(key)
            if key == "first":
                timers.cancel(name, "second")
                timers.start(name, "third", 0.02)

        timers = Timers(fire)
        timers.attach(loop)
        for key in ("first", "second", "third"):
            timers.start("w", key, 0.0)
        await asyncio.sleep(0.012)  # a slot at most: "third" is now due 20 ms later
        assert fired == ["first"]
        assert [(n, k) for n, k, _ in timers.pending()] == [("w", "third")]
        await asyncio.sleep(0.05)
        assert fired == ["first", "third"]

    asyncio.run(scenario())


def test_pending_timers_keep_their_deadlines_for_a_next_program() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        timers = Timers(lambda name, key: None)
        timers.attach(loop)
        deadline = loop.time() + 30
        timers.start_at("w", ("restart", 2), deadline)
        assert timers.pending() == [("w", ("restart", 2), deadline)]
        timers.clear()
        assert timers.pending() == []

    asyncio.run(scenario())


def test_a_timer_that_raises_costs_only_itself() -> None:
    """A stop of thousands puts their kill timeouts in one slot: a bug while handling one must
    not leave the others unfired (and their processes never killed). Reported, as the loop does
    for a callback of its own."""
    fired: list[Hashable] = []
    reported: list[BaseException] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))
        all_fired = asyncio.Event()

        def fire(name: str, key: Hashable) -> None:
            fired.append(key)
            if len(fired) == 5:
                all_fired.set()
            if key == ("kill", 0):
                raise RuntimeError("a bug with one process")

        timers = Timers(fire)
        timers.attach(loop)
        deadline = loop.time() + 0.01
        for i in range(5):
            timers.start_at("w", ("kill", i), deadline)
        await asyncio.wait_for(all_fired.wait(), timeout=5)
        assert timers.pending() == []

    asyncio.run(scenario())
    assert fired == [("kill", i) for i in range(5)]
    assert [str(exc) for exc in reported] == ["a bug with one process"]
