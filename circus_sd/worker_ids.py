"""A watcher's worker ids: which of 1..target are free to spawn, kept up to date at each change.

A start of N processes goes in steps of at most SPAWN_WINDOW spawns (watcher.py); looking over
every id 1..N at each step to find the free ones made the start quadratic in N (at 6,000
processes, more than a third of the arbiter's time). Here each change costs O(log N) and a step
only what it spawns or stops.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

# The heap of free ids keeps the ids that stopped being free without being taken (a backoff,
# a retirement, a smaller target); it is rebuilt from the free set once they outnumber it.
_STALE_SLACK = 64


class WorkerIds:
    """Each id of 1..target is held by one process (a spawn in flight, a process up, a failed
    start winding down), backing off (its RESTART timer runs), retired (respawn = false) or free.

    Plain attributes only: a watcher is pickled across a re-execution.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.holders: dict[int, int] = {}  # wid -> spawn id of the process that holds it
        self.backoff: set[int] = set()
        self.retired: set[int] = set()
        self._free: set[int] = set(range(1, target + 1))
        # A min-heap of the free ids, with stale entries (no longer free): skipped when taken.
        self._lowest: list[int] = list(range(1, target + 1))
        # Ids above the target still held (the target went down): their processes are stopped.
        self._surplus: set[int] = set()

    # -- queries ---------------------------------------------------------------------------------

    def surplus(self) -> list[int]:
        """The spawn ids, in order, of the processes holding ids above the target."""
        return sorted(self.holders[wid] for wid in self._surplus)

    # -- changes ---------------------------------------------------------------------------------

    def take_lowest(self, count: int) -> list[int]:
        """The `count` lowest free ids (fewer if there are not as many), no longer free: the
        caller holds each at once."""
        taken: list[int] = []
        while len(taken) < count and self._free:
            wid = heapq.heappop(self._lowest)
            if wid in self._free:
                self._free.discard(wid)
                taken.append(wid)
        return taken

    def hold(self, wid: int, spawn_id: int) -> None:
        if wid in self.holders:
            raise AssertionError(f"worker {wid} held twice ({self.holders[wid]}, {spawn_id})")
        self.holders[wid] = spawn_id
        self._free.discard(wid)
        if wid > self.target:
            self._surplus.add(wid)

    def release(self, wid: int) -> None:
        del self.holders[wid]
        self._surplus.discard(wid)
        self._free_if_unused(wid)

    def back_off(self, wid: int) -> None:
        self.backoff.add(wid)
        self._free.discard(wid)

    def end_backoff(self, wid: int) -> None:
        self.backoff.discard(wid)
        self._free_if_unused(wid)

    def clear_backoff(self) -> list[int]:
        """End every backoff; the ids that were backing off, in order."""
        ended = sorted(self.backoff)
        self.backoff.clear()
        self._free_all(ended)
        return ended

    def retire(self, wid: int) -> None:
        self.retired.add(wid)
        self._free.discard(wid)

    def clear_retired(self) -> None:
        retired = list(self.retired)
        self.retired.clear()
        self._free_all(retired)

    def retarget(self, target: int) -> None:
        """numprocesses changed: the ids above it are no longer free, those held are surplus."""
        before, self.target = self.target, target
        if target < before:
            # By the ids there are, not by the range: numprocesses may drop by millions.
            self._free = {wid for wid in self._free if wid <= target}
            self._lowest = sorted(self._free)
            self._surplus |= {wid for wid in self.holders if wid > target}
        else:
            self._surplus = {wid for wid in self._surplus if wid > target}
            self._free_all(range(before + 1, target + 1))

    # -- inner workings --------------------------------------------------------------------------

    def _free_all(self, wids: Iterable[int]) -> None:
        for wid in wids:
            self._free_if_unused(wid)

    def _free_if_unused(self, wid: int) -> None:
        if (
            wid > self.target
            or wid in self._free
            or wid in self.holders
            or wid in self.backoff
            or wid in self.retired
        ):
            return
        self._free.add(wid)
        if len(self._lowest) > 2 * len(self._free) + _STALE_SLACK:
            self._lowest = sorted(self._free)  # a sorted list is a heap
        else:
            heapq.heappush(self._lowest, wid)
