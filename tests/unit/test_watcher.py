"""Scripted histories against the watcher state machine, on a fake clock: no process is forked."""

from __future__ import annotations

import dataclasses
import errno
import logging
import random
import signal
from types import MappingProxyType
from typing import Any

import pytest

from circus_sd.actions import (
    Action,
    CallHook,
    CancelTimer,
    Log,
    Publish,
    Signal,
    Spawn,
    StartTimer,
)
from circus_sd.config.model import HookSpec, WatcherConfig
from circus_sd.restart_policy import SHORTAGE_MIN_DELAY, is_shortage
from circus_sd.states import (
    PROCESS_TRANSITIONS,
    WATCHER_TRANSITIONS,
    ProcessState,
    WatcherResult,
    WatcherState,
)
from circus_sd.watcher import (
    HEALTHY,
    KILL,
    MAX_AGE,
    RESTART,
    RETRY,
    SHORTAGE,
    SPAWN_WINDOW,
    Watcher,
)


class Harness:
    """Plays the arbiter: gives pids to spawns, keeps timers, collects events."""

    def __init__(self, **options: Any) -> None:
        config = WatcherConfig(name="web", cmd="/bin/true", **options)
        self.watcher = Watcher(config, rng=random.Random(7))
        self.now = 1000.0
        self.next_pid = 100
        self.timers: dict[Any, float] = {}
        self.pending_spawns: list[Spawn] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.signals: list[Signal] = []
        self.logs: list[Log] = []
        self.hook_calls: list[CallHook] = []

    def apply(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            if isinstance(action, Spawn):
                self.pending_spawns.append(action)
            elif isinstance(action, StartTimer):
                self.timers[action.key] = self.now + action.delay
            elif isinstance(action, CancelTimer):
                self.timers.pop(action.key, None)
            elif isinstance(action, Publish):
                self.events.append((action.event, action.payload))
            elif isinstance(action, Signal):
                self.signals.append(action)
            elif isinstance(action, Log):
                self.logs.append(action)
            elif isinstance(action, CallHook) and action.token is not None:
                self.hook_calls.append(action)
        return actions

    def answer(self, hook: str, approved: bool = True) -> None:
        """The first unanswered call of `hook` returns."""
        call = next(c for c in self.hook_calls if c.hook == hook)
        self.hook_calls.remove(call)
        self.apply(self.watcher.hook_done(call.token, approved, self.now))

    def hooks_asked(self) -> list[str]:
        return [call.hook for call in self.hook_calls]

    def start(self) -> None:
        self.apply(self.watcher.start(self.now))

    def stop(self) -> None:
        self.apply(self.watcher.stop(self.now))

    def answer_spawns(self) -> list[int]:
        """The spawner answers every pending request with a fresh pid."""
        pids = []
        while self.pending_spawns:
            spawn = self.pending_spawns.pop(0)
            pid = self.next_pid
            self.next_pid += 1
            pids.append(pid)
            self.apply(self.watcher.spawned(spawn.spawn_id, pid, self.now))
        return pids

    def exit(self, pid: int, code: int = 1, exec_error: str | None = None) -> None:
        self.apply(self.watcher.exited(pid, code, self.now, exec_error))

    def advance(self, seconds: float) -> None:
        """Move the clock, firing due timers in time order."""
        until = self.now + seconds
        while True:
            due = [(at, key) for key, at in self.timers.items() if at <= until]
            if not due:
                break
            at, key = min(due, key=lambda item: item[0])
            self.now = max(self.now, at)
            del self.timers[key]
            self.apply(self.watcher.timer(key, self.now))
        self.now = until

    def event_names(self) -> list[str]:
        return [name for name, _payload in self.events]


def test_every_state_has_a_transition_entry() -> None:
    assert set(WATCHER_TRANSITIONS) == set(WatcherState)
    assert set(PROCESS_TRANSITIONS) == set(ProcessState)
    for state, targets in WATCHER_TRANSITIONS.items():
        assert state not in targets


def test_start_spawns_one_process_per_worker_id_then_becomes_active() -> None:
    h = Harness(numprocesses=3)
    h.start()
    assert [s.wid for s in h.pending_spawns] == [1, 2, 3]
    assert h.watcher.state is WatcherState.STARTING
    pids = h.answer_spawns()
    assert h.watcher.state is WatcherState.ACTIVE
    assert h.watcher.pids == pids
    assert h.event_names() == ["spawn", "spawn", "spawn", "start"]


def test_numprocesses_zero_is_active_at_once() -> None:
    h = Harness(numprocesses=0)
    h.start()
    assert h.watcher.state is WatcherState.ACTIVE
    assert not h.pending_spawns


def test_singleton_runs_one_process() -> None:
    h = Harness(numprocesses=5, singleton=True)
    h.start()
    assert len(h.pending_spawns) == 1


def test_exit_after_min_uptime_restarts_the_same_wid_at_once() -> None:
    h = Harness(numprocesses=2)
    h.start()
    first, second = h.answer_spawns()
    h.advance(5)
    h.exit(first, code=-9)
    assert [s.wid for s in h.pending_spawns] == [1]
    assert ("reap", {"process_pid": first, "exit_code": -9}) in h.events
    (new,) = h.answer_spawns()
    assert h.watcher.pid_of(1) == new
    assert h.watcher.pid_of(2) == second
    assert h.watcher.restarts == 1


def test_a_process_killed_by_command_and_replaced_counts_as_a_restart() -> None:
    """resource_watcher restarts a process with `kill`: that restart is counted, as an exit's."""
    h = Harness(numprocesses=2)
    h.start()
    first, _second = h.answer_spawns()
    h.apply(h.watcher.kill(h.now, first))
    assert h.watcher.restarts == 1
    h.stop()
    assert h.watcher.restarts == 1, "a stop restarts nothing"


def test_failed_starts_back_off_exponentially_and_reset_after_a_healthy_run() -> None:
    h = Harness(backoff_initial=0.1, backoff_max=1.0, check_flapping=False)
    h.start()
    delays = []
    for _ in range(6):
        (pid,) = h.answer_spawns()
        h.advance(0.01)
        h.exit(pid)
        delays.append(h.timers[(RESTART, 1)] - h.now)
        h.advance(delays[-1])
    # 0.1, 0.2, 0.4, 0.8, then capped at 1.0; each within +-10 % jitter.
    for delay, base in zip(delays, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0], strict=True):
        assert base * 0.9 <= delay <= base * 1.1
    backoffs = [p for name, p in h.events if name == "backoff"]
    assert [b["failures"] for b in backoffs] == [1, 2, 3, 4, 5, 6]
    # A run longer than min_uptime resets the count: the next exit restarts at once.
    (pid,) = h.answer_spawns()
    h.advance(2.0)
    assert (HEALTHY, h.watcher.process_by_pid(pid).spawn_id) not in h.timers  # fired
    h.exit(pid)
    assert h.pending_spawns and (RESTART, 1) not in h.timers


def test_flapping_pauses_then_retries_then_gives_up() -> None:
    h = Harness(
        backoff_initial=0.01,
        flapping_attempts=3,
        flapping_window=1.0,
        flapping_retry_in=7.0,
        flapping_max_retry=2,
    )
    h.start()

    def crash_until_flapping() -> None:
        for _ in range(3):
            h.advance(0.05)
            (pid,) = h.answer_spawns()
            h.exit(pid)

    crash_until_flapping()
    assert h.watcher.state is WatcherState.PAUSED
    flaps = [p for name, p in h.events if name == "flapping"]
    assert flaps[-1]["give_up"] is False and flaps[-1]["retry_in"] == 7.0
    assert h.timers[(RETRY,)] == pytest.approx(h.now + 7.0)
    h.advance(6.9)
    assert not h.pending_spawns
    h.advance(0.2)
    assert h.watcher.state is WatcherState.STARTING and h.pending_spawns

    crash_until_flapping()
    assert h.watcher.state is WatcherState.PAUSED
    h.advance(7.1)
    crash_until_flapping()
    assert h.watcher.state is WatcherState.FAILED
    assert h.watcher.result is WatcherResult.FLAPPING
    assert "gave up after 2 pauses" in h.watcher.reason
    assert [p["give_up"] for name, p in h.events if name == "flapping"] == [False, False, True]
    h.advance(60)
    assert not h.pending_spawns
    # An operator's start clears the failure.
    h.start()
    assert h.watcher.state is WatcherState.STARTING
    assert h.watcher.result is WatcherResult.SUCCESS


def test_a_healthy_run_resets_the_flapping_pause_count() -> None:
    h = Harness(backoff_initial=0.01, flapping_attempts=2, flapping_retry_in=1.0,
                flapping_max_retry=1)
    h.start()
    for _ in range(2):
        h.advance(0.05)
        (pid,) = h.answer_spawns()
        h.exit(pid)
    assert h.watcher.state is WatcherState.PAUSED
    h.advance(1.1)
    (pid,) = h.answer_spawns()
    h.advance(5.0)  # ran well past min_uptime
    h.exit(pid)
    for _ in range(2):
        h.advance(0.05)
        (pid,) = h.answer_spawns()
        h.exit(pid)
    # Had the earlier pause still counted, max_retry = 1 would have given up here.
    assert h.watcher.state is WatcherState.PAUSED


def test_stop_escalates_to_sigkill_after_graceful_timeout() -> None:
    h = Harness(numprocesses=2, graceful_timeout=3.0, stop_signal=int(signal.SIGINT))
    h.start()
    pids = h.answer_spawns()
    h.stop()
    assert h.watcher.state is WatcherState.STOPPING
    assert [(s.pid, s.signum) for s in h.signals] == [(p, signal.SIGINT) for p in pids]
    h.exit(pids[0], code=0)
    h.advance(2.9)
    assert len(h.signals) == 2
    h.advance(0.2)
    assert h.signals[-1] == Signal(pids[1], signal.SIGKILL, tree=True)
    h.exit(pids[1], code=-9)
    assert h.watcher.state is WatcherState.STOPPED
    assert h.event_names()[-1] == "stop"
    assert not h.pending_spawns


def test_stop_children_signals_the_tree() -> None:
    h = Harness(stop_children=True)
    h.start()
    (pid,) = h.answer_spawns()
    h.stop()
    assert h.signals == [Signal(pid, signal.SIGTERM, tree=True)]


def test_stop_while_spawning_signals_once_the_pid_is_known() -> None:
    h = Harness()
    h.start()
    h.stop()
    assert h.watcher.state is WatcherState.STOPPING and not h.signals
    (pid,) = h.answer_spawns()
    assert h.signals == [Signal(pid, signal.SIGTERM)]
    h.exit(pid, code=-15)
    assert h.watcher.state is WatcherState.STOPPED


def test_exec_failures_give_up_after_max_retry() -> None:
    h = Harness(max_retry=3, backoff_initial=0.01)
    h.start()
    for _ in range(3):
        (pid,) = h.answer_spawns()
        h.exit(pid, code=127, exec_error="exec: No such file or directory")
        h.advance(1)
    assert h.watcher.state is WatcherState.FAILED
    assert h.watcher.result is WatcherResult.EXEC_FAILED
    assert "No such file" in h.watcher.reason


def test_max_retry_minus_one_retries_forever() -> None:
    h = Harness(max_retry=-1, backoff_initial=0.01, backoff_max=0.05)
    h.start()
    for _ in range(50):
        h.apply(h.watcher.spawn_failed(h.pending_spawns.pop(0).spawn_id, "EAGAIN", h.now))
        h.advance(0.1)
    assert h.watcher.state is WatcherState.STARTING
    assert h.pending_spawns


def test_respawn_false_leaves_the_worker_down() -> None:
    h = Harness(numprocesses=2, respawn=False)
    h.start()
    first, second = h.answer_spawns()
    h.advance(5)
    h.exit(first, code=0)
    assert not h.pending_spawns
    assert h.watcher.state is WatcherState.ACTIVE
    assert h.watcher.pids == [second]


def test_max_age_replaces_the_process() -> None:
    h = Harness(max_age=10.0, max_age_variance=0.0)
    h.start()
    (old,) = h.answer_spawns()
    h.advance(10.0)
    assert h.signals == [Signal(old, signal.SIGTERM)]
    (new,) = h.answer_spawns()
    assert h.watcher.pid_of(1) == new
    h.exit(old, code=-15)
    assert h.watcher.pids == [new]
    assert h.watcher.restarts == 0


def test_resize_up_and_down_keeps_low_wids() -> None:
    h = Harness(numprocesses=2)
    h.start()
    h.answer_spawns()
    config = dataclasses.replace(h.watcher.config, numprocesses=4)
    h.apply(h.watcher.update_config(config, h.now))
    assert [s.wid for s in h.pending_spawns] == [3, 4]
    pids = h.answer_spawns()
    config = dataclasses.replace(h.watcher.config, numprocesses=1)
    h.apply(h.watcher.update_config(config, h.now))
    signalled = sorted(s.pid for s in h.signals)
    assert signalled == sorted([h.watcher.processes[2].pid, *pids])  # wids 2, 3, 4


def test_restart_stops_then_starts_again() -> None:
    h = Harness()
    h.start()
    (old,) = h.answer_spawns()
    h.apply(h.watcher.restart(h.now))
    assert h.watcher.state is WatcherState.STOPPING
    h.exit(old, code=-15)
    assert h.watcher.state is WatcherState.STARTING
    (new,) = h.answer_spawns()
    assert new != old and h.watcher.state is WatcherState.ACTIVE


def test_warmup_delay_spaces_spawns() -> None:
    h = Harness(numprocesses=3, warmup_delay=0.5)
    h.start()
    assert len(h.pending_spawns) == 1
    h.answer_spawns()
    h.advance(0.4)
    assert not h.pending_spawns
    h.advance(0.2)
    assert [s.wid for s in h.pending_spawns] == [2]
    assert not h.watcher.start_settled


def test_stop_cancels_pending_restarts() -> None:
    h = Harness(backoff_initial=5.0, check_flapping=False)
    h.start()
    (pid,) = h.answer_spawns()
    h.exit(pid)
    assert (RESTART, 1) in h.timers
    h.stop()
    assert (RESTART, 1) not in h.timers
    assert h.watcher.state is WatcherState.STOPPED
    h.advance(10)
    assert not h.pending_spawns


def test_unknown_pid_exit_is_ignored() -> None:
    h = Harness()
    h.start()
    h.answer_spawns()
    assert h.watcher.exited(99999, 0, h.now) == []


def test_kill_timer_of_a_reaped_process_does_nothing() -> None:
    h = Harness()
    h.start()
    (pid,) = h.answer_spawns()
    spawn_id = h.watcher.process_by_pid(pid).spawn_id
    h.stop()
    h.exit(pid, code=0)
    assert (KILL, spawn_id) not in h.timers
    assert h.watcher.timer((KILL, spawn_id), h.now) == []
    assert h.watcher.timer((MAX_AGE, spawn_id), h.now) == []


def test_notify_watcher_is_active_only_once_every_process_is_ready() -> None:
    h = Harness(numprocesses=2, notify=True)
    h.start()
    first, second = h.answer_spawns()
    assert h.watcher.state is WatcherState.STARTING and not h.watcher.start_settled
    h.apply(h.watcher.notified(first, {"READY": "1", "STATUS": "warming"}, h.now))
    assert h.watcher.state is WatcherState.STARTING
    assert h.watcher.process_by_pid(first).status == "warming"
    h.apply(h.watcher.notified(second, {"READY": "1"}, h.now))
    assert h.watcher.state is WatcherState.ACTIVE and h.watcher.start_settled
    assert [p["process_pid"] for n, p in h.events if n == "ready"] == [first, second]


def test_a_process_not_ready_in_time_is_a_failed_start() -> None:
    h = Harness(notify=True, ready_timeout=5.0, backoff_initial=1.0, check_flapping=False)
    h.start()
    (pid,) = h.answer_spawns()
    h.advance(5.1)
    assert h.signals == [Signal(pid, signal.SIGTERM)]
    h.exit(pid, code=-15)
    # Ran 5 s (more than min_uptime) but never got ready: backoff, not an immediate restart.
    assert (RESTART, 1) in h.timers and not h.pending_spawns


def test_a_process_that_stops_pinging_the_watchdog_is_restarted() -> None:
    h = Harness(notify=True, watchdog_sec=3.0)
    h.start()
    (pid,) = h.answer_spawns()
    h.apply(h.watcher.notified(pid, {"READY": "1"}, h.now))
    for _ in range(3):
        h.advance(2.0)
        h.apply(h.watcher.notified(pid, {"WATCHDOG": "1"}, h.now))
    assert not h.signals
    h.advance(3.1)
    assert h.signals == [Signal(pid, signal.SIGABRT)]
    h.exit(pid, code=-6)
    assert [s.wid for s in h.pending_spawns] == [1]


def test_start_order_follows_priority_and_after() -> None:
    from circus_sd.start_order import DependencyError, start_order

    def w(name: str, priority: int = 0, after: tuple[str, ...] = ()) -> WatcherConfig:
        return WatcherConfig(name=name, cmd="x", priority=priority, after=after)

    order = start_order([w("web", 10, ("db",)), w("db"), w("cache", 5)])
    assert [c.name for c in order] == ["cache", "db", "web"]
    with pytest.raises(DependencyError, match="wait for each other"):
        start_order([w("a", after=("b",)), w("b", after=("a",))])
    with pytest.raises(DependencyError, match="no watcher named"):
        start_order([w("a", after=("nope",))])


# -- running short of the machine's resources ----------------------------------------------------


def _fail_spawns(h: Harness, count: int, code: int | None, reason: str = "no room") -> None:
    """The next `count` pending spawns fail with errno `code`."""
    for _ in range(count):
        spawn = h.pending_spawns.pop(0)
        h.apply(h.watcher.spawn_failed(spawn.spawn_id, reason, h.now, code))


def _answer(h: Harness, count: int) -> list[int]:
    """The spawner answers only the first `count` pending spawns (the later ones wait)."""
    pids = []
    for _ in range(count):
        spawn = h.pending_spawns.pop(0)
        pids.append(h.next_pid)
        h.next_pid += 1
        h.apply(h.watcher.spawned(spawn.spawn_id, pids[-1], h.now))
    return pids


def _warnings(h: Harness) -> list[str]:
    return [log.message for log in h.logs if log.level >= logging.WARNING]


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM])
def test_a_spawn_short_of_resources_keeps_what_runs_and_is_not_a_failure(code: int) -> None:
    """The default max_retry (5) would give the watcher up after five failed execs and stop
    its six running processes: spawns refused for lack of resources are deferred instead."""
    h = Harness(numprocesses=12)
    h.start()
    running = _answer(h, 6)
    _fail_spawns(h, 6, code, "too many open files")

    assert h.watcher.state is WatcherState.STARTING
    assert h.watcher.result is WatcherResult.SUCCESS and h.watcher.reason == ""
    assert h.watcher.pids == running and not h.signals
    assert h.watcher.deferred_spawns == 6
    assert h.watcher.shortage == "too many open files"
    assert h.watcher.restarts == 0
    deferred = [payload for name, payload in h.events if name == "spawn_deferred"]
    assert len(deferred) == 1, "one hold for the whole batch, not one per process"
    assert deferred[0]["running"] == 6 and deferred[0]["numprocesses"] == 12
    (warning,) = _warnings(h)
    assert "cannot start for lack of resources (too many open files)" in warning
    assert not h.pending_spawns and (SHORTAGE,) in h.timers
    assert h.watcher.start_settled, "a start waits no longer for deferred processes"

    h.advance(SHORTAGE_MIN_DELAY)
    assert [s.wid for s in h.pending_spawns] == [7, 8, 9, 10, 11, 12]
    h.answer_spawns()
    assert h.watcher.state is WatcherState.ACTIVE
    assert h.watcher.pids[:6] == running and len(h.watcher.pids) == 12
    assert h.watcher.shortage is None
    assert any("the resource shortage is over" in log.message for log in h.logs)


def test_a_long_shortage_backs_off_logs_once_and_never_gives_up() -> None:
    h = Harness(numprocesses=3, max_retry=1, backoff_initial=0.5, backoff_max=4.0)
    h.start()
    (first,) = _answer(h, 1)
    waits = []
    for _ in range(12):
        _fail_spawns(h, len(h.pending_spawns), errno.EAGAIN)
        waits.append(h.timers[(SHORTAGE,)] - h.now)
        h.advance(waits[-1])
    assert h.watcher.state is WatcherState.STARTING and h.watcher.pids == [first]
    assert h.watcher.deferred_spawns == 24
    # Doubling from backoff_initial up to backoff_max (+-10 % jitter).
    assert 0.45 <= waits[0] <= 0.55 and 0.9 <= waits[1] <= 1.1
    assert all(3.6 <= wait <= 4.4 for wait in waits[4:])
    assert len(_warnings(h)) == 1, "one warning per episode"
    assert len([n for n, _p in h.events if n == "spawn_deferred"]) == 12


def test_shortages_count_toward_neither_max_retry_nor_flapping() -> None:
    h = Harness(numprocesses=1, max_retry=2, flapping_attempts=2, backoff_initial=0.01)
    h.start()
    for _ in range(10):
        _fail_spawns(h, 1, errno.EMFILE)
        h.advance(h.timers[(SHORTAGE,)] - h.now)
    assert h.watcher.state is WatcherState.STARTING
    # Two real failed execs are still needed to give up: none was counted before.
    _fail_spawns(h, 1, errno.ENOENT, "exec: No such file or directory")
    assert h.watcher.state is WatcherState.STARTING
    h.advance(1)
    _fail_spawns(h, 1, errno.ENOENT, "exec: No such file or directory")
    assert h.watcher.state is WatcherState.FAILED
    assert h.watcher.result is WatcherResult.EXEC_FAILED


def test_the_childs_own_exec_errors_are_failed_starts_even_with_a_shortage_errno() -> None:
    """ENOMEM, EMFILE or EAGAIN from the child's setup or exec come after its rlimits and
    identity apply (rlimit_as, rlimit_nofile, the user's RLIMIT_NPROC set too low): the
    configuration cannot work, so max_retry gives the watcher up as before, instead of a
    retry that never ends. Only the arbiter and the spawner report shortages."""
    for code, text in [
        (errno.ENOMEM, "exec: Cannot allocate memory (errno 12)"),
        (errno.EAGAIN, "exec: Resource temporarily unavailable (errno 11)"),
        (errno.EMFILE, "exec: Too many open files (errno 24)"),
    ]:
        # Reaped before its status was read: `exited` with the exec error.
        h = Harness(numprocesses=2, max_retry=1)
        h.start()
        _kept, short = h.answer_spawns()
        h.advance(5)
        h.exit(short, 127, exec_error=text)
        assert h.watcher.state is WatcherState.STOPPING, code
        assert h.watcher.result is WatcherResult.EXEC_FAILED
        assert h.watcher.deferred_spawns == 0
        # Read from the status pipe before the watcher heard of it: a failed spawn, no errno.
        h = Harness(numprocesses=1, max_retry=1)
        h.start()
        for _ in range(2):
            _fail_spawns(h, 1, None, text)
            if h.watcher.state is WatcherState.FAILED:
                break
            h.advance(h.timers[(RESTART, 1)] - h.now)
        assert h.watcher.state is WatcherState.FAILED, code
        assert h.watcher.deferred_spawns == 0


def test_a_lost_spawner_defers_and_never_counts_toward_max_retry_or_flapping() -> None:
    """A spawner OOM-killed, or past its answer deadline, again and again under load: its
    unanswered requests are deferred (and asked of the next spawner at once), never failed
    starts, whatever max_retry and flapping say; what runs is kept."""
    h = Harness(numprocesses=4, max_retry=0, flapping_attempts=2, backoff_initial=0.01)
    h.start()
    running = _answer(h, 2)
    for loss in range(10):
        assert [s.wid for s in h.pending_spawns] == [3, 4], loss
        for _ in range(2):
            spawn = h.pending_spawns.pop(0)
            h.apply(
                h.watcher.spawn_failed(
                    spawn.spawn_id, "spawn: the spawner was lost: it exited", h.now, errno.EPIPE,
                    spawner_lost=True,
                )
            )
        assert not h.pending_spawns, "held until the loss's failures are all in"
        assert h.timers[(SHORTAGE,)] == h.now, "asked again at once: the spawner paces itself"
        h.advance(0)
    assert h.watcher.state is WatcherState.STARTING and h.watcher.pids == running
    assert h.watcher.result is WatcherResult.SUCCESS and h.watcher.reason == ""
    assert h.watcher.deferred_spawns == 20 and h.watcher.restarts == 0 and not h.signals
    assert h.watcher.shortage is None, "not a shortage of the machine's resources"
    deferred = [payload for name, payload in h.events if name == "spawn_deferred"]
    assert len(deferred) == 10, "one event per loss, not one per request"
    assert {d["cause"] for d in deferred} == {"spawner_lost"}
    assert deferred[0]["reason"] == "spawn: the spawner was lost: it exited"
    (warning,) = _warnings(h)
    assert "was not started: spawn: the spawner was lost: it exited; not a failed start" in warning
    h.answer_spawns()
    assert h.watcher.state is WatcherState.ACTIVE and len(h.watcher.pids) == 4
    assert any(
        "all 4 processes run again after the loss of the spawner" in log.message for log in h.logs
    )
    # A real failed start still counts (max_retry = 0: the first gives up).
    h.advance(10)
    h.exit(h.watcher.pids[-1], 0)
    assert h.watcher.state is WatcherState.ACTIVE
    _fail_spawns(h, 1, errno.ENOENT, "exec: No such file or directory")
    assert h.watcher.result is WatcherResult.EXEC_FAILED


def test_a_stop_during_a_shortage_ends_it() -> None:
    h = Harness(numprocesses=2)
    h.start()
    (pid,) = _answer(h, 1)
    _fail_spawns(h, 1, errno.EMFILE)
    h.stop()
    assert (SHORTAGE,) not in h.timers
    h.exit(pid, -15)
    assert h.watcher.state is WatcherState.STOPPED and h.watcher.shortage is None
    h.start()
    assert [s.wid for s in h.pending_spawns] == [1, 2], "the new start is not held back"


def test_only_the_machines_shortages_are_classified_as_such() -> None:
    short = [errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM]
    assert all(is_shortage(code) for code in short)
    others = [None, 0, errno.ENOENT, errno.EACCES, errno.EPIPE, errno.ENOEXEC, errno.EPERM]
    assert not any(is_shortage(code) for code in others)


# -- large starts go in steps --------------------------------------------------------------------


def test_a_large_start_spawns_in_steps_of_the_window() -> None:
    h = Harness(numprocesses=5 * SPAWN_WINDOW + 3)
    h.start()
    assert len(h.pending_spawns) == SPAWN_WINDOW
    assert len(h.watcher.processes) == SPAWN_WINDOW, "no record for workers not spawned yet"
    _answer(h, 10)
    assert len(h.pending_spawns) == SPAWN_WINDOW, "refilled as spawns are answered"
    assert max(s.wid for s in h.pending_spawns) == SPAWN_WINDOW + 10
    h.answer_spawns()
    assert len(h.watcher.pids) == 5 * SPAWN_WINDOW + 3
    assert h.watcher.state is WatcherState.ACTIVE


def test_a_stop_in_the_middle_of_a_large_start_spawns_nothing_more() -> None:
    h = Harness(numprocesses=100_000)
    h.start()
    started = _answer(h, SPAWN_WINDOW // 2)
    in_flight = list(h.pending_spawns)
    h.stop()
    assert len(h.signals) == len(started)
    h.answer_spawns()  # what was in flight is killed as soon as its pid is known
    assert len(h.signals) == len(started) + len(in_flight)
    assert not h.pending_spawns
    for pid in h.watcher.pids:
        h.exit(pid, -15)
    assert h.watcher.state is WatcherState.STOPPED
    assert len(h.watcher.processes) == 0


def test_once_the_arbiter_shuts_down_nothing_more_is_spawned() -> None:
    h = Harness(numprocesses=1000)
    h.start()
    _answer(h, 10)
    h.watcher.spawn_no_more()
    in_flight = len(h.pending_spawns)
    assert in_flight == SPAWN_WINDOW
    h.answer_spawns()
    assert len(h.watcher.pids) == 10 + in_flight and not h.pending_spawns
    h.advance(5)
    h.exit(h.watcher.pids[0], code=1)
    h.advance(60)
    assert not h.pending_spawns, "nor is an exited process replaced"


# -- every named wait, left every way it can be --------------------------------------------------


def _hooks(*names: str) -> MappingProxyType[str, HookSpec]:
    return MappingProxyType({name: HookSpec("probe.hook") for name in names})


def _pause(h: Harness) -> None:
    """Crash the only worker until the watcher is paused for flapping."""
    for _ in range(h.watcher.config.flapping_attempts):
        h.advance(0.05)
        (pid,) = h.answer_spawns()
        h.exit(pid)
    assert h.watcher.state is WatcherState.PAUSED


def test_a_stop_while_paused_or_failed_rests_stopped_and_cancels_the_retry() -> None:
    h = Harness(backoff_initial=0.01, flapping_attempts=2, flapping_retry_in=5.0)
    h.start()
    _pause(h)
    h.stop()
    assert h.watcher.state is WatcherState.STOPPED and (RETRY,) not in h.timers
    h.advance(10)
    assert not h.pending_spawns
    h = Harness(max_retry=1)
    h.start()
    _fail_spawns(h, 1, None, "exec: No such file or directory")
    assert h.watcher.state is WatcherState.FAILED
    h.stop()
    assert h.watcher.state is WatcherState.STOPPED
    assert h.watcher.result is WatcherResult.EXEC_FAILED, "stopping keeps why it failed"


def test_before_start_is_asked_again_after_a_pause_and_after_a_failure() -> None:
    h = Harness(
        hooks=_hooks("before_start"), backoff_initial=0.01, flapping_attempts=2,
        flapping_retry_in=1.0, max_retry=1,
    )
    h.start()
    h.answer("before_start")
    _pause(h)
    h.advance(1.1)
    assert h.hooks_asked() == ["before_start"] and not h.pending_spawns
    h.answer("before_start")
    _fail_spawns(h, 1, None, "exec: No such file or directory")
    assert h.watcher.state is WatcherState.FAILED
    h.start()
    assert h.hooks_asked() == ["before_start"] and not h.pending_spawns
    assert not h.watcher.start_settled


@pytest.mark.parametrize("waiting", ["before_start", "after_start"])
def test_a_stop_while_a_start_hook_runs_calls_before_stop_first(waiting: str) -> None:
    h = Harness(hooks=_hooks(waiting, "before_stop"))
    h.start()
    if waiting == "after_start":
        (pid,) = h.answer_spawns()
    assert h.hooks_asked() == [waiting]
    h.stop()
    assert h.hooks_asked() == [waiting, "before_stop"] and not h.signals
    h.answer(waiting)
    assert not h.pending_spawns and h.watcher.state is WatcherState.STOPPING
    h.answer("before_stop")
    if waiting == "after_start":
        assert h.signals == [Signal(pid, signal.SIGTERM)]
        h.exit(pid, -15)
    assert h.watcher.state is WatcherState.STOPPED


@pytest.mark.parametrize("then", ["respawned", "stopped", "stopped with before_stop"])
def test_after_start_is_asked_once_per_start_even_if_a_worker_went_missing_meanwhile(
    then: str,
) -> None:
    h = Harness(hooks=_hooks("after_start", *(["before_stop"] if "before_stop" in then else [])))
    h.start()
    (pid,) = h.answer_spawns()
    h.advance(5)
    h.exit(pid, code=1)  # while after_start runs
    h.answer("after_start")
    assert h.watcher.state is WatcherState.STARTING and not h.watcher.start_settled
    if then == "respawned":
        h.answer_spawns()
        assert h.watcher.state is WatcherState.ACTIVE and h.hooks_asked() == []
        return
    h.stop()
    if "before_stop" in then:
        h.answer("before_stop")
    (pid,) = h.answer_spawns()  # the respawn in flight is stopped once its pid is known
    assert h.signals[-1] == Signal(pid, signal.SIGTERM)
    h.exit(pid, -15)
    assert h.watcher.state is WatcherState.STOPPED


def test_a_stop_while_before_spawn_runs_drops_the_spawn() -> None:
    h = Harness(hooks=_hooks("before_spawn"))
    h.start()
    h.stop()
    assert h.watcher.state is WatcherState.STOPPING, "waits for the hook's answer"
    h.answer("before_spawn")
    assert not h.pending_spawns and h.watcher.state is WatcherState.STOPPED


def test_without_a_graceful_timeout_every_stop_is_sigkill() -> None:
    h = Harness(numprocesses=2, notify=True, graceful_timeout=0.0)
    h.start()
    first, second = h.answer_spawns()
    h.apply(h.watcher.notified(first, {"READY": "1"}, h.now))
    h.apply(h.watcher.kill(h.now))
    assert h.signals == [Signal(p, signal.SIGKILL, tree=True) for p in (first, second)]
    assert h.watcher.is_stopping(first) and h.watcher.is_stopping(second)
    assert not any(key[0] == KILL for key in h.timers)
    h = Harness(graceful_timeout=0.0)
    h.start()
    h.stop()
    (pid,) = h.answer_spawns()
    assert h.signals == [Signal(pid, signal.SIGKILL, tree=True)]


@pytest.mark.parametrize("graceful_timeout", [0.0, 2.0])
def test_a_process_not_ready_in_time_is_killed_if_it_does_not_stop(
    graceful_timeout: float,
) -> None:
    h = Harness(notify=True, ready_timeout=5.0, graceful_timeout=graceful_timeout)
    h.start()
    (pid,) = h.answer_spawns()
    h.advance(5.0)
    h.advance(2.0)
    assert h.signals[-1] == Signal(pid, signal.SIGKILL, tree=True)
    assert not h.pending_spawns, "its worker waits for the exit"
    h.exit(pid, code=-9)
    assert (RESTART, 1) in h.timers, "a failed start: backoff"


# -- what the arbiter waits for ------------------------------------------------------------------


def test_queries_for_replacements_and_resizes() -> None:
    h = Harness(numprocesses=3, graceful_timeout=3.0)
    h.start()
    old = h.answer_spawns()
    assert h.watcher.pids_of_wids({1, 3}) == {old[0], old[2]}
    assert h.watcher.pids_of_wids(None) == set(old)
    h.apply(h.watcher.replace_processes(h.now, {1}))
    assert h.watcher.is_stopping(old[0]) and not h.watcher.is_stopping(old[1])
    assert not h.watcher.is_stopping(99999)
    assert h.watcher.pids_of_wids({1}) == {old[0]}, "being stopped, still there"
    assert not h.watcher.replaced({old[0]}) and not h.watcher.resize_settled()
    (new,) = h.answer_spawns()
    assert h.watcher.resize_settled() and not h.watcher.replaced({old[0]})
    h.exit(old[0], -15)
    assert h.watcher.replaced({old[0]})
    assert h.watcher.pids_of_wids({1}) == {new}
    config = dataclasses.replace(h.watcher.config, numprocesses=4)
    h.apply(h.watcher.update_config(config, h.now))
    assert not h.watcher.resize_settled()
    h.answer_spawns()
    assert h.watcher.resize_settled()
