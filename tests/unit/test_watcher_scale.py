"""The watcher at scale: a step costs what it changes, not the number of processes.

The watcher keeps tallies (worker_ids.WorkerIds, counts by phase, the running workers) instead of
looking at every process at each step; these tests check the tallies against a recount after
every step of random histories, and that a start of thousands never looks at every process.
"""

from __future__ import annotations

import dataclasses
import errno
import random
from collections import Counter
from types import MappingProxyType
from typing import Any

import pytest

from circus_sd.actions import Action, CallHook, CancelTimer, Spawn, StartTimer
from circus_sd.config.model import HookSpec, WatcherConfig
from circus_sd.states import (
    HOLDS_WORKER_PHASES,
    PROCESS_STATE_OF,
    RUNNING_PHASES,
    UNBORN_PHASES,
    UP_PROCESS_PHASES,
    ProcessPhase,
    ProcessState,
    WatcherState,
)
from circus_sd.watcher import SPAWN_WINDOW, ProcessRecord, Watcher
from circus_sd.worker_ids import WorkerIds

# -- worker ids ------------------------------------------------------------------------------------


def test_the_lowest_free_ids_are_taken_first() -> None:
    ids = WorkerIds(6)
    assert ids.take_lowest(2) == [1, 2]
    ids.hold(1, 10)
    ids.hold(2, 11)
    ids.back_off(3)
    ids.retire(4)
    assert ids.take_lowest(5) == [5, 6]
    ids.hold(5, 12)
    ids.hold(6, 13)
    ids.release(2)
    ids.end_backoff(3)
    assert ids.take_lowest(5) == [2, 3]


def test_ids_come_back_free_when_nothing_holds_them() -> None:
    ids = WorkerIds(3)
    for wid in ids.take_lowest(3):
        ids.hold(wid, wid + 100)
    ids.release(2)
    ids.back_off(2)  # its process exited and the restart waits
    assert ids.take_lowest(3) == []
    assert ids.clear_backoff() == [2]
    ids.retire(2)
    assert ids.take_lowest(3) == []
    ids.clear_retired()
    assert ids.take_lowest(3) == [2]
    with pytest.raises(AssertionError, match="held twice"):
        ids.hold(1, 999)


def test_a_lower_target_makes_the_ids_above_it_surplus_in_spawn_order() -> None:
    ids = WorkerIds(5)
    for wid, spawn_id in zip(ids.take_lowest(5), [30, 10, 50, 20, 40], strict=True):
        ids.hold(wid, spawn_id)
    ids.release(5)
    ids.retarget(2)
    assert ids.surplus() == [20, 50]  # wids 4 and 3, by spawn id
    ids.release(3)
    assert ids.surplus() == [20]
    ids.retarget(4)
    assert ids.surplus() == []
    assert ids.take_lowest(9) == [3]
    ids.retarget(7)
    assert ids.take_lowest(9) == [5, 6, 7]


def test_the_free_ids_keep_their_order_through_many_changes() -> None:
    ids = WorkerIds(50)
    rng = random.Random(3)
    held: set[int] = set()
    for _ in range(5000):
        wid = rng.randint(1, 50)
        if wid in held:
            ids.release(wid)
            held.discard(wid)
            if rng.random() < 0.5:
                ids.back_off(wid)
            continue
        if wid in ids.backoff:
            ids.end_backoff(wid)
        taken = ids.take_lowest(rng.randint(0, 3))
        free = [w for w in range(1, 51) if w not in held and w not in ids.backoff]
        assert taken == free[: len(taken)]
        for got in taken:
            ids.hold(got, got)
            held.add(got)
    assert len(ids._lowest) <= 2 * len(ids._free) + 64  # stale entries do not pile up


# -- the tallies against a recount -----------------------------------------------------------------


def recount(watcher: Watcher) -> None:
    """Check every tally against the processes themselves (what the steps used to scan)."""
    records = list(watcher.processes.values())
    awaited = watcher._after_spawn_awaited
    counted = dict.fromkeys(ProcessPhase, 0) | Counter(p.phase for p in records)
    assert watcher._phase_counts == counted
    up = [p for p in records if p.phase in UP_PROCESS_PHASES and p.spawn_id not in awaited]
    assert watcher._running_wids == {p.wid for p in up}
    assert watcher._ready_wids == {p.wid for p in up if p.phase is ProcessPhase.READY}
    holders = {p.wid: p.spawn_id for p in records if p.phase in HOLDS_WORKER_PHASES}
    ids = watcher._worker_ids
    assert ids.holders == holders
    assert watcher.pids == sorted(p.pid for p in records if p.pid is not None)
    if ids.target == watcher.config.target_processes:
        blocked = holders.keys() | ids.backoff | ids.retired
        assert ids._free == set(range(1, ids.target + 1)) - blocked
        assert ids.surplus() == sorted(s for w, s in holders.items() if w > ids.target)
    if watcher.phase in RUNNING_PHASES:  # trimmed at each step
        target = watcher.config.target_processes
        assert not [p for p in records if p.phase in UP_PROCESS_PHASES and p.wid > target]
    pending = any(
        p.phase in UNBORN_PHASES or p.spawn_id in awaited
        or (watcher.config.awaits_readiness and p.phase is ProcessPhase.RUNNING)
        for p in records
    )
    if watcher.state is WatcherState.STARTING and pending:
        assert not watcher.start_settled
    assert watcher._spawning() == any(p.state is ProcessState.SPAWNING for p in records)


def test_the_processes_unborn_are_those_seen_as_spawning() -> None:
    shown = {phase for phase, state in PROCESS_STATE_OF.items() if state is ProcessState.SPAWNING}
    assert shown == UNBORN_PHASES


HOOKS = ["before_start", "after_start", "before_spawn", "after_spawn", "before_stop"]


def random_config(rng: random.Random) -> WatcherConfig:
    hooks = {name: HookSpec("probe.hook") for name in HOOKS if rng.random() < 0.2}
    return WatcherConfig(
        name="web",
        cmd="/bin/true",
        numprocesses=rng.randint(0, 8),
        notify=rng.random() < 0.3,
        hooks=MappingProxyType(hooks),
        respawn=rng.random() < 0.8,
        warmup_delay=rng.choice([0.0, 0.0, 0.5]),
        graceful_timeout=rng.choice([0.0, 1.0]),
    )


class Player:
    """Plays the arbiter at random: spawn answers and failures, exits, readiness, hooks, timers,
    resizes, kills and stops."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.config = random_config(self.rng)
        self.watcher = Watcher(self.config, rng=random.Random(seed))
        self.now = 1000.0
        self.asked: list[int] = []
        self.alive: list[int] = []
        self.timers: dict[Any, float] = {}
        self.hooks: list[Any] = []
        self.next_pid = 100

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Spawn):
                self.asked.append(action.spawn_id)
            elif isinstance(action, StartTimer):
                self.timers[action.key] = self.now + action.delay
            elif isinstance(action, CancelTimer):
                self.timers.pop(action.key, None)
            elif isinstance(action, CallHook) and action.token is not None:
                self.hooks.append(action.token)

    def step(self) -> None:
        rng, w, now = self.rng, self.watcher, self.now
        choice = rng.choice(
            ["start", "start", "stop", "answer", "answer", "answer", "fail", "exit", "exit",
             "ready", "hook", "hook", "timer", "timer", "resize", "kill"]
        )
        if choice == "start":
            self.apply(w.start(now))
        elif choice == "stop":
            self.apply(w.stop(now) if rng.random() < 0.5 else w.restart(now))
        elif choice == "answer" and self.asked:
            count = rng.randint(1, len(self.asked))
            answered = enumerate(self.asked[:count])
            spawns = [(spawn_id, self.next_pid + i) for i, spawn_id in answered]
            del self.asked[:count]
            self.next_pid += count
            self.alive += [pid for _spawn_id, pid in spawns]
            self.apply(w.spawned_all(spawns, now))
        elif choice == "fail" and self.asked:
            spawn_id = self.asked.pop(rng.randrange(len(self.asked)))
            code = rng.choice([None, errno.EMFILE])
            self.apply(w.spawn_failed(spawn_id, "no", now, code, spawner_lost=rng.random() < 0.2))
        elif choice == "exit" and self.alive:
            pid = self.alive.pop(rng.randrange(len(self.alive)))
            self.apply(w.exited(pid, rng.choice([0, 1, -15]), now))
        elif choice == "ready" and self.alive:
            self.apply(w.notified(rng.choice(self.alive), {"READY": "1"}, now))
        elif choice == "hook" and self.hooks:
            token = self.hooks.pop(rng.randrange(len(self.hooks)))
            self.apply(w.hook_done(token, rng.random() < 0.9, now))
        elif choice == "timer" and self.timers:
            key, at = min(self.timers.items(), key=lambda item: item[1])
            del self.timers[key]
            self.now = max(now, at)
            self.apply(w.timer(key, self.now))
        elif choice == "resize":
            self.config = dataclasses.replace(self.config, numprocesses=rng.randint(0, 8))
            self.apply(w.update_config(self.config, now))
        elif choice == "kill":
            pid = rng.choice(self.alive) if self.alive and rng.random() < 0.7 else None
            self.apply(w.kill(now, pid=pid))


@pytest.mark.parametrize("seeds", [range(0, 100), range(100, 200)])
def test_the_tallies_match_a_recount_after_every_step(seeds: range) -> None:
    for seed in seeds:
        player = Player(seed)
        for _ in range(150):
            player.step()
            recount(player.watcher)


# -- a start of thousands --------------------------------------------------------------------------


class CountingRecords(dict[int, ProcessRecord]):
    """The watcher's process table, counting the looks at every process."""

    scans = 0

    def values(self) -> Any:
        self.scans += 1
        return super().values()

    def items(self) -> Any:
        self.scans += 1
        return super().items()

    def __iter__(self) -> Any:
        self.scans += 1
        return super().__iter__()


def test_a_start_of_thousands_never_looks_at_every_process() -> None:
    count = 5000
    watcher = Watcher(WatcherConfig(name="web", cmd="/bin/true", numprocesses=count))
    records = CountingRecords()
    watcher.processes = records
    now = 1000.0
    asked = [a for a in watcher.start(now) if isinstance(a, Spawn)]
    steps, pid = 0, 100
    while asked:
        assert len(asked) <= SPAWN_WINDOW
        # The spawner answers in batches, and the arbiter asks after each whether the start
        # is settled, as for any waiting command.
        batch, asked = asked[:40], asked[40:]
        spawns = [(spawn.spawn_id, pid + i) for i, spawn in enumerate(batch)]
        pid += len(batch)
        asked += [a for a in watcher.spawned_all(spawns, now) if isinstance(a, Spawn)]
        assert watcher.start_settled is (watcher.state is WatcherState.ACTIVE)
        steps += 1
    assert records.scans == 0
    assert watcher.state is WatcherState.ACTIVE
    assert len(watcher.processes) == count
    assert [p.wid for p in watcher.processes.values()] == list(range(1, count + 1))
    assert steps == count // 40
    records.scans = 0
    # One exit, one respawn: neither looks at the others.
    watcher.exited(pid - 1, 1, now + 10)
    assert watcher._worker_ids.holders[count] == count + 1
    assert records.scans == 0
