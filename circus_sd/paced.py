"""Work asked for at every exit whose cost grows with the number of children (reading the list
of all of them), run soon after it is asked for, but paced by what it costs: after a run that
took t, the next waits until t / SHARE has passed since its start. At 10,000 children a look
takes milliseconds and a mass stop asked for one at every loop turn (a seventh of its time);
at a few hundred it takes a tenth of a millisecond and waits about 2 ms. After a look stalled by
load or swap, the next waits MAX_WAIT after its end at most: every watcher's stop waits for one
(orphans.py)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

# The share of the loop's time these looks may take at most.
SHARE = 0.05
# The longest wait between two looks, however long the last one took (seconds).
MAX_WAIT = 0.5


class Paced:
    def __init__(self, action: Callable[[], None]) -> None:
        self._action = action
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = False
        self._next = -math.inf  # loop time from which the next run may start

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def request(self) -> None:
        """Run the action once, at the end of this loop turn or once its pace allows."""
        if self._due or self._loop is None:
            return
        self._due = True
        wait = self._next - self._loop.time()
        if wait > 0:
            self._loop.call_later(wait, self._run)
        else:
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        assert self._loop is not None
        self._due = False
        started = self._loop.time()
        self._action()
        ended = self._loop.time()
        took = ended - started
        # Idle after it, always: a look slower than MAX_WAIT must not make the next one at once.
        self._next = ended + min(took / SHARE - took, MAX_WAIT)
