"""The watchers' timers (kill timeouts, restart delays, min_uptime, ...), by (watcher, key), on a
few loop timers.

A stop of 10,000 processes starts 10,000 kill timeouts of the same length within one loop turn,
and the exits cancel them. One loop timer each costs a handle, a push onto the loop's heap
(whose entries compare in Python) and a cancelled entry left in it. Here the timers due within
the same SLOT share one loop timer: starting or cancelling one is a dict operation. A timer
fires at most SLOT late, never early; timers of one slot fire in the order they were started.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Hashable

SLOT = 0.005  # seconds

TimerId = tuple[str, Hashable]  # (watcher, key)


class Timers:
    def __init__(self, fire: Callable[[str, Hashable], None]) -> None:
        self._fire = fire
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines: dict[TimerId, float] = {}
        # Slot number -> the timers due in it, in the order started (a dict as an ordered set).
        self._slots: dict[int, dict[TimerId, None]] = {}
        self._handles: dict[int, asyncio.TimerHandle] = {}

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def start(self, name: str, key: Hashable, delay: float) -> None:
        """(Re)start a timer: `fire(name, key)` in `delay` seconds."""
        assert self._loop is not None
        self.start_at(name, key, self._loop.time() + delay)

    def start_at(self, name: str, key: Hashable, deadline: float) -> None:
        """(Re)start a timer for `deadline`, on the loop's clock (CLOCK_MONOTONIC)."""
        assert self._loop is not None
        timer = (name, key)
        self.cancel(name, key)
        self._deadlines[timer] = deadline
        slot = math.ceil(deadline / SLOT)
        due = self._slots.get(slot)
        if due is None:
            due = self._slots[slot] = {}
            self._handles[slot] = self._loop.call_at(slot * SLOT, self._run_slot, slot)
        due[timer] = None

    def cancel(self, name: str, key: Hashable) -> None:
        """Nothing if it is not running (fired, cancelled or never started)."""
        timer = (name, key)
        deadline = self._deadlines.pop(timer, None)
        if deadline is None:
            return
        slot = math.ceil(deadline / SLOT)
        due = self._slots.get(slot)
        if due is None:  # its slot is firing now
            return
        del due[timer]
        if not due:
            del self._slots[slot]
            self._handles.pop(slot).cancel()

    def pending(self) -> list[tuple[str, Hashable, float]]:
        """Every running timer: (watcher, key, deadline)."""
        return [(name, key, deadline) for (name, key), deadline in self._deadlines.items()]

    def clear(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        self._slots.clear()
        self._deadlines.clear()

    def _run_slot(self, slot: int) -> None:
        self._handles.pop(slot, None)
        due = self._slots.pop(slot, {})
        for timer in due:
            # Each firing may cancel or restart the ones after it in this slot.
            deadline = self._deadlines.get(timer)
            if deadline is None or math.ceil(deadline / SLOT) != slot:
                continue
            del self._deadlines[timer]
            try:
                self._fire(*timer)
            except Exception as exc:  # a bug with one timer must not lose the rest of its slot
                assert self._loop is not None
                self._loop.call_exception_handler({
                    "message": f"Exception firing timer {timer!r}",
                    "exception": exc,
                })
