"""Looks paced by their cost, on a real loop: the next one waits t / SHARE, but never long."""

from __future__ import annotations

import asyncio
import time

from circus_sd.paced import MAX_WAIT, SHARE, Paced


def test_a_slow_look_delays_the_next_one_by_max_wait_at_most() -> None:
    """A look that took 0.1 s (load, swap) would make the next wait 2 s, and with it every
    watcher's stop that waits for a look."""
    runs: list[float] = []
    slow = 0.1
    assert slow / SHARE > 3 * MAX_WAIT

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        second = asyncio.Event()

        def look() -> None:
            runs.append(loop.time())
            if len(runs) == 1:
                time.sleep(slow)  # the look itself is slow
            else:
                second.set()

        paced = Paced(look)
        paced.attach(loop)
        paced.request()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(runs) == 1
        paced.request()
        await asyncio.wait_for(second.wait(), timeout=slow / SHARE)

    asyncio.run(scenario())
    assert runs[1] - runs[0] >= slow  # paced: not at once
    assert runs[1] - runs[0] < slow / SHARE / 2

