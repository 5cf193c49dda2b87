"""The watcher state machine: what to do with a watcher's processes, given an event and the time.

Pure logic: no I/O, no clock of its own. Every public method takes the current monotonic time,
builds a typed event (watcher_events) and dispatches it through WATCHER_TABLE, keyed on the
watcher's phase; what concerns one process goes on through PROCESS_TABLE, keyed on that process's
phase. Handlers return actions (spawn, signal, timers, events, log lines) for the arbiter.

Hooks (Circus's `hooks.NAME`) that can change what happens are gates here: the watcher asks for
the call (a `CallHook` action with a token) and waits in a named phase for `hook_done` before
going on (spawning, becoming active, stopping processes). Running the hook is the arbiter's
business (threads, deadlines); the hooks tied to one signal or one exit (before/after_signal,
before/after_reap) are run by the arbiter around that I/O and never reach the state machine.
"""

from __future__ import annotations

import enum
import logging
import random
import signal
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

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
from circus_sd.config.model import WatcherConfig
from circus_sd.message_ids import MessageId
from circus_sd.restart_policy import (
    SHORTAGE_CAUSE,
    SPAWNER_LOST_CAUSE,
    FlappingDetector,
    backoff_delay,
    is_shortage,
    shortage_delay,
)
from circus_sd.states import (
    EXIT_STATUS_UNKNOWN,
    FAILED_START_PHASES,
    HALTED_PHASES,
    HOLDS_WORKER_PHASES,
    PLAIN_STOP_PHASES,
    PROCESS_PHASE_TRANSITIONS,
    PROCESS_STATE_OF,
    PROCESS_TRANSITIONS,
    RUNNING_PHASES,
    STOP_PROCESS_PHASES,
    STOPPING_PHASES,
    STOPPING_PROCESS_STATES,
    UNBORN_PHASES,
    UP_PROCESS_PHASES,
    WATCHER_PHASE_TRANSITIONS,
    WATCHER_STATE_OF,
    WATCHER_TRANSITIONS,
    WITH_PID_PHASES,
    ProcessPhase,
    ProcessState,
    SpawnGate,
    Want,
    WatcherPhase,
    WatcherResult,
    WatcherState,
)
from circus_sd.watcher_events import (
    AFTER_SPAWN,
    AFTER_START,
    AFTER_STOP,
    BEFORE_SPAWN,
    BEFORE_START,
    BEFORE_STOP,
    HEALTHY,
    KILL,
    MAX_AGE,
    READY_TIMEOUT,
    RESTART,
    RETRY,
    SHORTAGE,
    WARMUP,
    WATCHDOG,
    AfterSpawnDone,
    AfterStartDone,
    BeforeSpawnDone,
    BeforeStartDone,
    BeforeStopDone,
    ConfigReplaced,
    ConfigUpdated,
    Event,
    Exited,
    KillAsked,
    KillTimeout,
    MaxAgeReached,
    MinUptimeReached,
    Notified,
    OutputMatched,
    ReadyTimeout,
    ReplaceAsked,
    RestartAsked,
    RestartDue,
    RetryDue,
    ShortageWaitOver,
    Spawned,
    SpawnedAll,
    SpawnFailed,
    SpawnNoMore,
    StartAsked,
    StopAsked,
    StopProcess,
    WarmupOver,
    WatchdogTimeout,
    hook_event,
    timer_event,
)
from circus_sd.watcher_table import Ignored, Impossible, Table
from circus_sd.worker_ids import WorkerIds

# Re-exported: callers and tests name timer keys and hooks from here.
__all__ = [
    "AFTER_SPAWN", "AFTER_START", "AFTER_STOP", "BEFORE_SPAWN", "BEFORE_START", "BEFORE_STOP",
    "HEALTHY", "KILL", "MAX_AGE", "PROCESS_TABLE", "READY_TIMEOUT", "RESTART", "RETRY",
    "SHORTAGE", "SPAWN_WINDOW", "WARMUP", "WATCHDOG", "WATCHER_TABLE", "Observer",
    "ProcessRecord", "Watcher",
]

# The most processes of one watcher being spawned at a time (asked of the spawner, or exec'ing).
# A start of N processes goes in steps of this many: each step is planned when the previous
# ones have answered, so the loop keeps serving (status, a stop) all along, and a stop leaves at
# most this many spawns to wind down. Large enough to keep the spawner's pipeline full.
SPAWN_WINDOW = 128

# From the stop signal to SIGKILL, keeping why the process is stopped.
_SIGKILL_AFTER = {
    ProcessPhase.STOP_SIGNAL: ProcessPhase.STOP_SIGKILL,
    ProcessPhase.READY_TIMEOUT_SIGNAL: ProcessPhase.READY_TIMEOUT_SIGKILL,
}


class Observer(Protocol):
    """Sees every dispatch and phase change (the tests check them against the tables)."""

    def dispatched(self, table: str, phase: enum.Enum, event: Event, cell: object) -> None: ...

    def moved(self, table: str, before: enum.Enum | None, after: enum.Enum) -> None: ...


@dataclass
class ProcessRecord:
    """One process of a watcher, from the spawn request until it has been reaped."""

    spawn_id: int
    wid: int
    phase: ProcessPhase
    pid: int | None = None
    started_at: float = 0.0
    # The last STATUS= from sd_notify (watchers with `notify`).
    status: str = ""

    @property
    def state(self) -> ProcessState:
        """What clients see of the phase."""
        return PROCESS_STATE_OF[self.phase]

    @property
    def ready(self) -> bool:
        """READY=1 (or `ready_log_line`) seen and the process not stopped since."""
        return self.phase is ProcessPhase.READY


class Watcher:
    """Decides, for one watcher, when processes are spawned, restarted, paused and stopped."""

    # Set (by tests) to see every dispatch and phase change of every watcher.
    observer: ClassVar[Observer | None] = None

    def __init__(self, config: WatcherConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.want = Want.DOWN
        self.phase = WatcherPhase.STOPPED
        self.result = WatcherResult.SUCCESS
        # Why the watcher is paused or failed, in words, for status and logs.
        self.reason = ""
        self.processes: dict[int, ProcessRecord] = {}
        self.restarts = 0
        self._rng = rng or random.Random()
        self._last_spawn_id = 0  # a plain int: the watcher is pickled across a re-execution
        self._pids: dict[int, int] = {}
        self._failures: dict[int, int] = {}  # wid -> consecutive failed starts
        # Kept up to date at each change of a process, so that a step reads them instead of
        # looking at every process (a start of N processes takes about N / SPAWN_WINDOW steps,
        # and the arbiter asks start_settled after each event): which worker ids are free, held,
        # backing off or retired; how many processes are in each phase; the workers whose
        # process runs (is ready), with no after_spawn hook awaited.
        self._worker_ids = WorkerIds(config.target_processes)
        self._phase_counts = dict.fromkeys(ProcessPhase, 0)
        self._running_wids: set[int] = set()
        self._ready_wids: set[int] = set()
        self._exec_failures = 0
        self._pauses = 0
        self._gates: set[SpawnGate] = set()
        # Spawns that failed for lack of resources (restart_policy.is_shortage) or because the
        # spawner was lost before it answered: deferred, counted apart, never toward max_retry
        # or flapping. An episode lasts from the first such failure until every wanted process
        # runs (or the watcher stops); while SpawnGate.SHORTAGE holds, nothing is spawned.
        self.deferred_spawns = 0
        self.shortage: str | None = None  # why, during an episode with a shortage
        self._deferred_causes: set[str] = set()  # restart_policy's *_CAUSE, this episode
        self._shortage_holds = 0
        # Where the current stop ends (stopped, paused, failed). Data of the stopping phases,
        # not a phase: a start or stop asked meanwhile changes it, not what is being done
        # (systemd likewise keeps a unit's result beside its state).
        self._stop_destination = WatcherPhase.STOPPED
        self._flapping = FlappingDetector(config.flapping_attempts, config.flapping_window)
        # Which start/stop a hook's answer belongs to (a late answer of an earlier one is
        # ignored), and whether this stop calls before_stop/after_stop.
        self._start_number = 0
        self._stop_number = 0
        self._stop_hooks = False
        # after_spawn runs while its process lives (it may get ready, be stopped or exit
        # meanwhile), so the wait is the watcher's, by spawn id: it holds the start back.
        self._after_spawn_awaited: set[int] = set()

    # -- queries ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def state(self) -> WatcherState:
        """What clients see of the phase."""
        return WATCHER_STATE_OF[self.phase]

    @property
    def pids(self) -> list[int]:
        return sorted(self._pids)

    @property
    def process_count(self) -> int:
        """len(pids), without sorting them."""
        return len(self._pids)

    @property
    def wids(self) -> list[int]:
        return sorted({p.wid for p in self.processes.values() if p.pid is not None})

    def pid_of(self, wid: int) -> int | None:
        for process in self.processes.values():
            if process.wid == wid and process.phase in UP_PROCESS_PHASES:
                return process.pid
        return None

    def pids_of_wids(self, wids: set[int] | None = None) -> set[int]:
        """The pids of the processes (running or being stopped) of worker ids `wids`, or all."""
        return {
            p.pid
            for p in self.processes.values()
            if p.pid is not None and (wids is None or p.wid in wids)
        }

    @property
    def start_settled(self) -> bool:
        """A start has done what it can now: every worker was spawned (and is ready, if it says
        so), is backing off or failed."""
        return self.start_settled_for(readiness=True)

    def start_settled_for(self, readiness: bool) -> bool:
        """`start_settled`; without `readiness`, a running process not ready yet counts too."""
        if self.state is not WatcherState.STARTING:
            return True
        pending = (
            self._unborn() > 0
            or bool(self._after_spawn_awaited)
            or (
                readiness
                and self.config.awaits_readiness
                and self._phase_counts[ProcessPhase.RUNNING] > 0
            )
        )
        gated = self.phase in (WatcherPhase.BEFORE_START, WatcherPhase.AFTER_START)
        return not pending and SpawnGate.WARMUP not in self._gates and not gated

    def resize_settled(self) -> bool:
        """After a change of numprocesses: the start is settled and no process is spawning."""
        return self.start_settled and not self._spawning()

    def replaced(self, old_pids: set[int]) -> bool:
        """After replace_processes: the replacements are up (as resize_settled) and none of
        `old_pids` is left."""
        return self.resize_settled() and old_pids.isdisjoint(self._pids)

    def is_stopping(self, pid: int) -> bool:
        """The process was sent its stop signal, or SIGKILL, by this watcher."""
        process = self.process_by_pid(pid)
        return process is not None and process.state in STOPPING_PROCESS_STATES

    def process_by_pid(self, pid: int) -> ProcessRecord | None:
        spawn_id = self._pids.get(pid)
        return None if spawn_id is None else self.processes.get(spawn_id)

    def _spawning(self) -> bool:
        return self._unborn() > 0

    def _unborn(self) -> int:
        """Processes asked of the spawner or of their before_spawn hook, not answered yet (their
        public state is SPAWNING)."""
        return sum(self._phase_counts[phase] for phase in UNBORN_PHASES)

    def _all_running(self) -> bool:
        """Every wanted worker has a running (and, if it must say so, ready) process (and no
        after_spawn hook awaited), or is retired."""
        running = self._ready_wids if self.config.awaits_readiness else self._running_wids
        retired = self._worker_ids.retired
        target = self.config.target_processes
        if len(running) + len(retired) < target:
            return False  # too few to cover them all: most steps of a start end here
        # Stops at the first missing worker: no set of every wanted wid (numprocesses may be big).
        return all(wid in running or wid in retired for wid in range(1, target + 1))

    # -- the arbiter's calls: each builds an event ----------------------------------------------

    def start(self, now: float) -> list[Action]:
        return self._dispatch(StartAsked(), now)

    def stop(self, now: float) -> list[Action]:
        return self._dispatch(StopAsked(), now)

    def spawn_no_more(self) -> None:
        """The arbiter is shutting down: plan no spawn from now on (a start in progress ends
        with the spawns already asked for, SPAWN_WINDOW at most); the stop comes in its turn."""
        self._dispatch(SpawnNoMore(), 0.0)

    def restart(self, now: float) -> list[Action]:
        return self._dispatch(RestartAsked(), now)

    def replace_processes(self, now: float, wids: set[int] | None = None) -> list[Action]:
        """Stop running processes (of `wids`, or all); their workers respawn at once."""
        return self._dispatch(ReplaceAsked(None if wids is None else frozenset(wids)), now)

    def kill(
        self,
        now: float,
        pid: int | None = None,
        signum: int | None = None,
        graceful_timeout: float | None = None,
    ) -> list[Action]:
        """`kill` command: stop one process (or all) with a signal, SIGKILL after a timeout.

        Unlike `stop`, the watcher stays up: its workers respawn as after any exit.
        """
        return self._dispatch(KillAsked(pid, signum, graceful_timeout), now)

    def update_config(self, config: WatcherConfig, now: float) -> list[Action]:
        """Apply options that take effect without restarting processes (numprocesses, timeouts)."""
        return self._dispatch(ConfigUpdated(config), now)

    def replace_config(self, config: WatcherConfig) -> None:
        """Swap in a config that changes how processes are made; only while halted."""
        self._dispatch(ConfigReplaced(config), 0.0)

    def spawned(self, spawn_id: int, pid: int, now: float) -> list[Action]:
        return self.spawned_all([(spawn_id, pid)], now)

    def spawned_all(self, spawns: Iterable[tuple[int, int]], now: float) -> list[Action]:
        """Processes (spawn id, pid) exec'd their program: one reconciliation for all of them
        (a start of N processes would otherwise scan N records N times)."""
        return self._dispatch(SpawnedAll(tuple(spawns)), now)

    def spawn_failed(
        self,
        spawn_id: int,
        reason: str,
        now: float,
        code: int | None = None,
        spawner_lost: bool = False,
    ) -> list[Action]:
        """The spawn never became a process: `reason` in words. `code`: the errno of a failure
        in the arbiter or the spawner (a shortage if restart_policy.is_shortage), never the
        errno the child reports from its setup or exec (always a failed start). `spawner_lost`:
        the spawner was lost before it answered (deferred, not a failed start either)."""
        return self._dispatch(SpawnFailed(spawn_id, reason, code, spawner_lost), now)

    def exited(
        self,
        pid: int,
        exit_code: int,
        now: float,
        exec_error: str | None = None,
    ) -> list[Action]:
        """A process was reaped; `exit_code` is its status, or -signum if a signal killed it.

        `exec_error`: it never became its program (setup or exec failed): a failed start,
        whatever the errno (restart_policy.SHORTAGE_ERRNOS says why)."""
        return self._dispatch(Exited(pid, exit_code, exec_error), now)

    def notified(self, pid: int, message: dict[str, str], now: float) -> list[Action]:
        """An sd_notify datagram from a process's own NOTIFY_SOCKET."""
        return self._dispatch(Notified(pid, message), now)

    def output_matched(self, pid: int, now: float) -> list[Action]:
        """A line of the process's output matched `ready_log_line`."""
        return self._dispatch(OutputMatched(pid), now)

    def hook_done(self, token: Hashable, approved: bool, now: float) -> list[Action]:
        """The outcome of a `CallHook` with a token: `approved` is False when the hook returned
        False, or failed (raised, timed out) and its errors are not ignored."""
        return self._dispatch(hook_event(token, approved), now)

    def timer(self, key: Hashable, now: float) -> list[Action]:
        return self._dispatch(timer_event(key), now)

    # -- dispatch --------------------------------------------------------------------------------

    def _dispatch(self, event: Event, now: float) -> list[Action]:
        cell = WATCHER_TABLE[(self.phase, type(event))]
        if self.observer is not None:
            self.observer.dispatched(WATCHER_TABLE.name, self.phase, event, cell)
        if isinstance(cell, Ignored | Impossible):
            return []
        return cell(self, event, now)

    def _on_process(self, process: ProcessRecord, event: Event, now: float) -> list[Action]:
        cell = PROCESS_TABLE[(process.phase, type(event))]
        if self.observer is not None:
            self.observer.dispatched(PROCESS_TABLE.name, process.phase, event, cell)
        if isinstance(cell, Ignored | Impossible):
            return []
        return cell(self, process, event, now)

    def _enter(self, phase: WatcherPhase) -> None:
        if phase not in WATCHER_PHASE_TRANSITIONS[self.phase]:
            raise AssertionError(f"watcher {self.name}: {self.phase} -> {phase} not allowed")
        seen, will_see = self.state, WATCHER_STATE_OF[phase]
        if seen is not will_see and will_see not in WATCHER_TRANSITIONS[seen]:
            raise AssertionError(f"watcher {self.name}: {seen} -> {will_see} not allowed")
        if self.observer is not None:
            self.observer.moved(WATCHER_TABLE.name, self.phase, phase)
        self.phase = phase

    def _move(self, process: ProcessRecord, phase: ProcessPhase) -> None:
        if phase not in PROCESS_PHASE_TRANSITIONS[process.phase]:
            raise AssertionError(f"process {process.pid}: {process.phase} -> {phase} not allowed")
        seen, will_see = process.state, PROCESS_STATE_OF[phase]
        if seen is not will_see and will_see not in PROCESS_TRANSITIONS[seen]:
            raise AssertionError(f"process {process.pid}: {seen} -> {will_see} not allowed")
        if self.observer is not None:
            self.observer.moved(PROCESS_TABLE.name, process.phase, phase)
        self._tally(process, -1)
        held, holds = process.phase in HOLDS_WORKER_PHASES, phase in HOLDS_WORKER_PHASES
        if held and not holds:
            self._worker_ids.release(process.wid)
        elif holds and not held:
            self._worker_ids.hold(process.wid, process.spawn_id)
        process.phase = phase
        self._tally(process, +1)

    def _born(self, process: ProcessRecord) -> None:
        self.processes[process.spawn_id] = process
        self._worker_ids.hold(process.wid, process.spawn_id)  # both birth phases hold it
        self._tally(process, +1)
        if self.observer is not None:
            self.observer.moved(PROCESS_TABLE.name, None, process.phase)

    def _forget(self, process: ProcessRecord) -> None:
        """The process leaves the table: reaped, or its spawn failed or was dropped."""
        self._tally(process, -1)
        if process.phase in HOLDS_WORKER_PHASES:
            self._worker_ids.release(process.wid)
        del self.processes[process.spawn_id]

    def _tally(self, process: ProcessRecord, sign: int) -> None:
        """Count the process in (+1) or out (-1) of the phase counts and the running workers."""
        phase, wid = process.phase, process.wid
        self._phase_counts[phase] += sign
        if phase not in UP_PROCESS_PHASES or process.spawn_id in self._after_spawn_awaited:
            return
        # A set, not a count: one process at most holds a worker id (WorkerIds.hold).
        ready = phase is ProcessPhase.READY
        if sign > 0:
            self._running_wids.add(wid)
            if ready:
                self._ready_wids.add(wid)
        else:
            self._running_wids.discard(wid)
            if ready:
                self._ready_wids.discard(wid)

    def _await_after_spawn(self, process: ProcessRecord, awaited: bool) -> None:
        """While its after_spawn hook runs, a process does not count as running."""
        self._tally(process, -1)
        if awaited:
            self._after_spawn_awaited.add(process.spawn_id)
        else:
            self._after_spawn_awaited.discard(process.spawn_id)
        self._tally(process, +1)

    # -- commands --------------------------------------------------------------------------------

    def _start_from_rest(self, event: StartAsked | RestartAsked, now: float) -> list[Action]:
        self.want = Want.UP
        actions: list[Action] = [CancelTimer(RetryDue().key)]
        self.result = WatcherResult.SUCCESS
        self.reason = ""
        self._pauses = 0
        self._exec_failures = 0
        self._failures.clear()
        self._worker_ids.clear_retired()
        self._flapping.reset()
        self._end_shortage()
        return actions + self._begin_start(now)

    def _start_again(self, event: StartAsked, now: float) -> list[Action]:
        self.want = Want.UP
        return self._reconcile(now)

    def _start_after_stop(self, event: StartAsked, now: float) -> list[Action]:
        # Finish stopping, then start again (want is up); an operator's start overrides a
        # flapping pause or a failure the stop was headed for.
        self.want = Want.UP
        self._stop_destination = WatcherPhase.STOPPED
        return []

    def _stop(self, event: StopAsked, now: float) -> list[Action]:
        self.want = Want.DOWN
        return self._halt(WatcherPhase.STOPPED, now)

    def _restart(self, event: RestartAsked, now: float) -> list[Action]:
        self.want = Want.UP
        return self._halt(WatcherPhase.STOPPED, now)

    def _replace(self, event: ReplaceAsked, now: float) -> list[Action]:
        actions: list[Action] = []
        for process in list(self.processes.values()):
            if process.phase in UP_PROCESS_PHASES and (
                event.wids is None or process.wid in event.wids
            ):
                actions += self._stop_process(process, now)
        return actions + self._reconcile(now)

    def _kill(self, event: KillAsked, now: float) -> list[Action]:
        actions: list[Action] = []
        if event.pid is None:
            chosen = list(self.processes.values())
        else:  # one process: found by its pid, not among all (plugins kill one at a time)
            found = self.process_by_pid(event.pid)
            chosen = [] if found is None else [found]
        for process in chosen:
            if process.phase in UP_PROCESS_PHASES:
                actions += self._stop_process(
                    process, now, event.signum, event.graceful_timeout
                )
                if self.phase in RUNNING_PHASES:
                    # Replaced at once: a restart, whoever asked (resource_watcher's included).
                    self.restarts += 1
        return actions + self._reconcile(now)

    def _update_config(self, event: ConfigUpdated, now: float) -> list[Action]:
        self.config = event.config
        self._flapping.attempts = event.config.flapping_attempts
        self._flapping.window = event.config.flapping_window
        return self._reconcile(now)

    def _replace_config(self, event: ConfigReplaced, now: float) -> list[Action]:
        self.config = event.config
        self._flapping = FlappingDetector(
            event.config.flapping_attempts, event.config.flapping_window
        )
        return []

    def _refuse_replace_config(self, event: ConfigReplaced, now: float) -> list[Action]:
        raise AssertionError("replace_config needs a stopped watcher")

    def _spawn_no_more(self, event: SpawnNoMore, now: float) -> list[Action]:
        self._gates.add(SpawnGate.SHUTDOWN)
        return []

    # -- the watcher's hooks and timers ----------------------------------------------------------

    def _before_start_done(self, event: BeforeStartDone, now: float) -> list[Action]:
        if event.key != self._start_number:
            return []
        if not event.approved:
            return self._abort(BEFORE_START, now)
        self._enter(WatcherPhase.STARTING)
        return self._reconcile(now)

    def _after_start_done(self, event: AfterStartDone, now: float) -> list[Action]:
        if event.key != self._start_number:
            return []
        if not event.approved:
            return self._abort(AFTER_START, now)
        self._enter(WatcherPhase.START_APPROVED)
        return self._reconcile(now)

    def _before_stop_done(self, event: BeforeStopDone, now: float) -> list[Action]:
        if event.key != self._stop_number:
            return []
        self._enter(WatcherPhase.STOPPING)
        actions: list[Action] = []
        for process in list(self.processes.values()):
            actions += self._stop_process(process, now)
        return actions + self._reconcile(now)

    def _restart_due(self, event: RestartDue, now: float) -> list[Action]:
        self._worker_ids.end_backoff(event.wid)
        return self._reconcile(now)

    def _warmup_over(self, event: WarmupOver, now: float) -> list[Action]:
        self._gates.discard(SpawnGate.WARMUP)
        return self._reconcile(now)

    def _shortage_wait_over(self, event: ShortageWaitOver, now: float) -> list[Action]:
        self._gates.discard(SpawnGate.SHORTAGE)
        return self._reconcile(now)

    def _retry_due(self, event: RetryDue, now: float) -> list[Action]:
        if self.want is not Want.UP:
            return []
        self._flapping.reset()
        self._failures.clear()
        return [
            Log(
                logging.INFO,
                f"{self.name}: flapping pause over, starting again",
                MessageId.FLAPPING_PAUSE_OVER,
            ),
            *self._begin_start(now),
        ]

    # -- to the process concerned ----------------------------------------------------------------

    def _route_spawned(self, event: SpawnedAll, now: float) -> list[Action]:
        actions: list[Action] = []
        for spawn_id, pid in event.spawns:
            process = self.processes.get(spawn_id)
            if process is None:  # given up meanwhile: nobody wants it
                actions.append(Signal(pid, signal.SIGKILL, tree=True))
            else:
                actions += self._on_process(process, Spawned(spawn_id, pid), now)
        return actions + self._reconcile(now)

    def _route_by_spawn_id(
        self,
        event: SpawnFailed | KillTimeout | MaxAgeReached | MinUptimeReached | ReadyTimeout
        | WatchdogTimeout,
        now: float,
    ) -> list[Action]:
        process = self.processes.get(event.spawn_id)
        return [] if process is None else self._on_process(process, event, now)

    def _route_hook_answer(
        self, event: BeforeSpawnDone | AfterSpawnDone, now: float
    ) -> list[Action]:
        process = self.processes.get(event.key)
        return [] if process is None else self._on_process(process, event, now)

    def _route_by_pid(self, event: Exited | Notified | OutputMatched, now: float) -> list[Action]:
        process = self.process_by_pid(event.pid)
        return [] if process is None else self._on_process(process, event, now)

    # -- one process -----------------------------------------------------------------------------

    def _stop_process(
        self,
        process: ProcessRecord,
        now: float,
        signum: int | None = None,
        timeout: float | None = None,
    ) -> list[Action]:
        return self._on_process(process, StopProcess(signum, timeout), now)

    def _cancel_before_spawn(
        self, process: ProcessRecord, event: StopProcess, now: float
    ) -> list[Action]:
        self._move(process, ProcessPhase.BEFORE_SPAWN_CANCELLED)
        return []

    def _cancel_spawn(self, process: ProcessRecord, event: StopProcess, now: float) -> list[Action]:
        self._move(process, ProcessPhase.SPAWNING_CANCELLED)
        return []

    def _stop_running(self, process: ProcessRecord, event: StopProcess, now: float) -> list[Action]:
        return self._signal_stop(process, event.signum, event.timeout)

    def _signal_stop(
        self,
        process: ProcessRecord,
        signum: int | None,
        timeout: float | None,
        failed_start: bool = False,
    ) -> list[Action]:
        """Stop signal (SIGKILL after `timeout`), or SIGKILL at once if there is no timeout."""
        signum = self.config.stop_signal if signum is None else signum
        timeout = self.config.graceful_timeout if timeout is None else timeout
        assert process.pid is not None
        actions: list[Action] = [
            CancelTimer(MaxAgeReached(process.spawn_id).key),
            CancelTimer(MinUptimeReached(process.spawn_id).key),
            *self._cancel_notify_timers(process.spawn_id),
        ]
        if timeout <= 0:
            self._move(
                process,
                ProcessPhase.READY_TIMEOUT_SIGKILL if failed_start else ProcessPhase.STOP_SIGKILL,
            )
            return [
                *actions,
                Signal(process.pid, signal.SIGKILL, tree=True),
                Publish("kill", {"process_pid": process.pid}),
            ]
        self._move(
            process,
            ProcessPhase.READY_TIMEOUT_SIGNAL if failed_start else ProcessPhase.STOP_SIGNAL,
        )
        return [
            *actions,
            Signal(process.pid, signum, tree=self.config.stop_children),
            Publish("kill", {"process_pid": process.pid}),
            StartTimer(KillTimeout(process.spawn_id).key, timeout),
        ]

    def _spawned(self, process: ProcessRecord, event: Spawned, now: float) -> list[Action]:
        actions = self._life_begins(process, event.pid, now)
        self._move(process, ProcessPhase.RUNNING)
        if AFTER_SPAWN in self.config.hooks and self.phase in RUNNING_PHASES:
            self._await_after_spawn(process, True)
            token = (AFTER_SPAWN, process.spawn_id)
            actions.append(CallHook(AFTER_SPAWN, token, {"pid": event.pid}))
        return actions

    def _spawned_unwanted(self, process: ProcessRecord, event: Spawned, now: float) -> list[Action]:
        # Its timers are started and cancelled at once: the same actions as for any stop.
        return self._life_begins(process, event.pid, now) + self._signal_stop(process, None, None)

    def _life_begins(self, process: ProcessRecord, pid: int, now: float) -> list[Action]:
        process.pid = pid
        process.started_at = now
        self._pids[pid] = process.spawn_id
        actions: list[Action] = [
            Publish("spawn", {"process_pid": pid}),
            Log(
                logging.DEBUG,
                f"{self._label(process)} spawned",
                MessageId.PROCESS_SPAWNED,
                wid=process.wid,
                pid=pid,
            ),
        ]
        spawn_id = process.spawn_id
        if self.config.awaits_readiness and self.config.ready_timeout > 0:
            actions.append(StartTimer(ReadyTimeout(spawn_id).key, self.config.ready_timeout))
        if self.config.max_age > 0:
            lifetime = self.config.max_age + self._rng.uniform(0, self.config.max_age_variance)
            actions.append(StartTimer(MaxAgeReached(spawn_id).key, lifetime))
        if self._failures.get(process.wid) or self._pauses or self._exec_failures:
            actions.append(StartTimer(MinUptimeReached(spawn_id).key, self.config.min_uptime))
        return actions

    def _spawn_failed(self, process: ProcessRecord, event: SpawnFailed, now: float) -> list[Action]:
        self._forget(process)
        if event.spawner_lost:
            return self._defer(process, event.reason, now, SPAWNER_LOST_CAUSE)
        if is_shortage(event.code):
            return self._defer(process, event.reason, now, SHORTAGE_CAUSE)
        return self._after_exec_failure(process, event.reason, now)

    def _reaped(self, process: ProcessRecord, event: Exited) -> list[Action]:
        spawn_id = process.spawn_id
        del self._pids[event.pid]
        self._forget(process)
        self._after_spawn_awaited.discard(spawn_id)
        return [
            CancelTimer(KillTimeout(spawn_id).key),
            CancelTimer(MaxAgeReached(spawn_id).key),
            CancelTimer(MinUptimeReached(spawn_id).key),
            *self._cancel_notify_timers(spawn_id),
            Publish("reap", {"process_pid": event.pid, "exit_code": event.exit_code}),
        ]

    def _exited_stopped(self, process: ProcessRecord, event: Exited, now: float) -> list[Action]:
        actions = self._reaped(process, event)
        actions.append(
            Log(
                logging.DEBUG,
                f"{self._label(process)} stopped ({event.exit_code})",
                MessageId.PROCESS_STOPPED,
                wid=process.wid, pid=process.pid,
            )
        )
        return actions + self._reconcile(now)

    def _exited_unexpectedly(
        self, process: ProcessRecord, event: Exited, now: float
    ) -> list[Action]:
        actions = self._reaped(process, event)
        if event.exec_error is not None:
            return actions + self._after_exec_failure(process, event.exec_error, now)
        uptime = now - process.started_at
        how = _describe_exit(event.exit_code)
        failed_start = process.phase in FAILED_START_PHASES
        if uptime >= self.config.min_uptime and not failed_start:
            self._failures.pop(process.wid, None)
            self._exec_failures = 0
            self._pauses = 0
            return actions + self._after_exit(process, f"{how} after {uptime:.1f} s", now)
        failures = self._failures.get(process.wid, 0) + 1
        self._failures[process.wid] = failures
        what = f"{how} after {uptime:.2f} s (failed start {failures})"
        if self.config.check_flapping and self._flapping.record_failure(now):
            return actions + self._flap(process, what, now)
        return actions + self._after_exit(process, what, now)

    def _notified(self, process: ProcessRecord, event: Notified, now: float) -> list[Action]:
        message = event.message
        actions: list[Action] = []
        if "STATUS" in message:
            process.status = message["STATUS"]
        if message.get("READY") == "1" and process.phase is ProcessPhase.RUNNING:
            actions += self._become_ready(process, "READY=1")
        if (
            message.get("WATCHDOG") == "1"
            and process.phase is ProcessPhase.READY
            and self.config.watchdog_sec > 0
        ):
            actions.append(
                StartTimer(WatchdogTimeout(process.spawn_id).key, self.config.watchdog_sec)
            )
        if "ERRNO" in message:
            actions.append(
                Log(
                    logging.WARNING,
                    f"{self._label(process)} reports errno {message['ERRNO']}",
                    MessageId.PROCESS_ERRNO,
                    wid=process.wid, pid=process.pid,
                )
            )
        return actions + self._reconcile(now)

    def _output_matched(
        self, process: ProcessRecord, event: OutputMatched, now: float
    ) -> list[Action]:
        return self._become_ready(process, "ready_log_line") + self._reconcile(now)

    def _become_ready(self, process: ProcessRecord, how: str) -> list[Action]:
        self._move(process, ProcessPhase.READY)
        actions: list[Action] = [
            CancelTimer(ReadyTimeout(process.spawn_id).key),
            Publish("ready", {"process_pid": process.pid, "wid": process.wid}),
            Log(
                logging.INFO,
                f"{self._label(process)} ready ({how})",
                MessageId.PROCESS_READY,
                wid=process.wid, pid=process.pid,
            ),
        ]
        if self.config.notify and self.config.watchdog_sec > 0:
            actions.append(
                StartTimer(WatchdogTimeout(process.spawn_id).key, self.config.watchdog_sec)
            )
        return actions

    def _before_spawn_done(
        self, process: ProcessRecord, event: BeforeSpawnDone, now: float
    ) -> list[Action]:
        running = self.phase in RUNNING_PHASES
        if not event.approved and running:
            self._forget(process)
            return self._abort(BEFORE_SPAWN, now)
        if not running or process.wid > self.config.target_processes:
            self._forget(process)
            return self._reconcile(now)
        self._move(process, ProcessPhase.SPAWNING)
        return [Spawn(process.spawn_id, process.wid)]

    def _before_spawn_done_cancelled(
        self, process: ProcessRecord, event: BeforeSpawnDone, now: float
    ) -> list[Action]:
        self._forget(process)
        if not event.approved and self.phase in RUNNING_PHASES:
            return self._abort(BEFORE_SPAWN, now)
        return self._reconcile(now)

    def _after_spawn_done(
        self, process: ProcessRecord, event: AfterSpawnDone, now: float
    ) -> list[Action]:
        if process.spawn_id not in self._after_spawn_awaited:
            return []
        self._await_after_spawn(process, False)
        if not event.approved and self.phase in RUNNING_PHASES:
            return self._abort(AFTER_SPAWN, now)
        return self._reconcile(now)

    def _kill_timeout(self, process: ProcessRecord, event: KillTimeout, now: float) -> list[Action]:
        assert process.pid is not None
        self._move(process, _SIGKILL_AFTER[process.phase])
        return [
            Signal(process.pid, signal.SIGKILL, tree=True),
            Publish("kill", {"process_pid": process.pid}),
            Log(
                logging.WARNING,
                f"{self._label(process)} still running when its graceful timeout ran out: "
                "SIGKILL",
                MessageId.PROCESS_SIGKILLED,
                wid=process.wid, pid=process.pid,
            ),
        ]

    def _max_age_reached(
        self, process: ProcessRecord, event: MaxAgeReached, now: float
    ) -> list[Action]:
        message = f"{self._label(process)} reached max_age: replacing it"
        return [
            Log(logging.INFO, message, MessageId.MAX_AGE_REACHED, wid=process.wid, pid=process.pid),
            *self._stop_process(process, now),
            *self._reconcile(now),
        ]

    def _min_uptime_reached(
        self, process: ProcessRecord, event: MinUptimeReached, now: float
    ) -> list[Action]:
        self._failures.pop(process.wid, None)
        self._exec_failures = 0
        self._pauses = 0
        return []

    def _ready_timeout(
        self, process: ProcessRecord, event: ReadyTimeout, now: float
    ) -> list[Action]:
        label = self._label(process)
        message = f"{label} not ready {self.config.ready_timeout:g} s after its start"
        stop = self._signal_stop(process, None, None, failed_start=True)
        said = Log(
            logging.WARNING,
            f"{message}: restarting it",
            MessageId.READY_TIMEOUT,
            wid=process.wid,
            pid=process.pid,
        )
        return [said, *stop, *self._reconcile(now)]

    def _watchdog_timeout(
        self, process: ProcessRecord, event: WatchdogTimeout, now: float
    ) -> list[Action]:
        label = self._label(process)
        message = f"{label} sent no WATCHDOG=1 for {self.config.watchdog_sec:g} s"
        stop = self._stop_process(process, now, signal.SIGABRT)
        said = Log(
            logging.WARNING,
            f"{message}: restarting it",
            MessageId.WATCHDOG_TIMEOUT,
            wid=process.wid,
            pid=process.pid,
        )
        return [said, *stop, *self._reconcile(now)]

    # -- inner workings --------------------------------------------------------------------------

    def _cancel_notify_timers(self, spawn_id: int) -> list[Action]:
        if not self.config.awaits_readiness:
            return []
        return [
            CancelTimer(ReadyTimeout(spawn_id).key),
            CancelTimer(WatchdogTimeout(spawn_id).key),
        ]

    def _label(self, process: ProcessRecord) -> str:
        return f"{self.name}[{process.wid}] pid {process.pid}"

    def _begin_start(self, now: float) -> list[Action]:
        self._start_number += 1
        count = self.config.target_processes
        actions: list[Action] = [
            Log(
                logging.INFO,
                f"{self.name}: starting {count} process(es)",
                MessageId.WATCHER_STARTING,
            )
        ]
        if BEFORE_START in self.config.hooks:
            self._enter(WatcherPhase.BEFORE_START)
            return [*actions, CallHook(BEFORE_START, (BEFORE_START, self._start_number))]
        self._enter(WatcherPhase.STARTING)
        return actions + self._reconcile(now)

    def _abort(self, hook: str, now: float) -> list[Action]:
        """A hook said no to the start (Circus: returning False stops the watcher)."""
        self.result = WatcherResult.HOOK_ABORTED
        self.reason = f"start aborted by the {hook} hook"
        message = f"{self.name}: the {hook} hook returned False or failed: stopping the watcher"
        # Circus calls no stop hook when before_start refuses: nothing was started.
        stop_hooks = hook != BEFORE_START
        return [
            Log(logging.ERROR, message, MessageId.HOOK_ABORTED_START),
            *self._halt(WatcherPhase.FAILED, now, stop_hooks),
        ]

    def _halt(
        self, destination: WatcherPhase, now: float, stop_hooks: bool = True
    ) -> list[Action]:
        """Stop every process, then rest in `destination` (stopped, paused or failed).

        With a before_stop hook, the processes are stopped once it has returned.
        """
        actions: list[Action] = [
            CancelTimer(RestartDue(wid).key) for wid in self._worker_ids.clear_backoff()
        ]
        if SpawnGate.SHORTAGE in self._gates:
            actions.append(CancelTimer(ShortageWaitOver().key))
        self._end_shortage()
        if SpawnGate.WARMUP in self._gates:
            self._gates.discard(SpawnGate.WARMUP)
            actions.append(CancelTimer(WarmupOver().key))
        if self.phase in HALTED_PHASES:
            if self.phase is not destination and destination is WatcherPhase.STOPPED:
                actions.append(CancelTimer(RetryDue().key))
                self._enter(destination)
            return actions
        self._stop_destination = destination
        if self.phase in RUNNING_PHASES:
            self._stop_number += 1
            self._stop_hooks = stop_hooks
            if stop_hooks and BEFORE_STOP in self.config.hooks:
                self._enter(WatcherPhase.BEFORE_STOP)
                return [*actions, CallHook(BEFORE_STOP, (BEFORE_STOP, self._stop_number))]
            self._enter(WatcherPhase.STOPPING)
        elif self.phase is WatcherPhase.BEFORE_STOP:
            return actions
        for process in list(self.processes.values()):
            actions += self._stop_process(process, now)
        return actions + self._reconcile(now)

    def _after_exit(self, process: ProcessRecord, what: str, now: float) -> list[Action]:
        """An unexpected exit that is not flapping: restart the worker, maybe after a backoff."""
        label = self._label(process)
        if not self.config.respawn:
            self._worker_ids.retire(process.wid)
            return [
                Log(
                    logging.INFO,
                    f"{label} {what}; not restarted (respawn = false)",
                    MessageId.PROCESS_EXITED,
                    wid=process.wid, pid=process.pid,
                )
            ]
        if self.phase not in RUNNING_PHASES:
            said = Log(
                logging.INFO,
                f"{label} {what}",
                MessageId.PROCESS_EXITED,
                wid=process.wid,
                pid=process.pid,
            )
            return [said, *self._reconcile(now)]
        return self._schedule_restart(
            process.wid, f"{label} {what}", now, MessageId.PROCESS_EXITED, process.pid
        )

    def _schedule_restart(
        self, wid: int, what: str, now: float, kind: MessageId, pid: int | None
    ) -> list[Action]:
        """`kind`: what happened (an exit, a failed start), for a restart without a delay."""
        self.restarts += 1
        failures = max(self._failures.get(wid, 0), self._exec_failures)
        delay = backoff_delay(
            failures, self.config.backoff_initial, self.config.backoff_max, self._rng
        )
        if delay <= 0:
            # A warning, as with a delay: the process ended without being asked to.
            said = Log(logging.WARNING, f"{what}; restarting", kind, wid=wid, pid=pid)
            return [said, *self._reconcile(now)]
        self._worker_ids.back_off(wid)
        return [
            Log(
                logging.WARNING,
                f"{what}; restarting in {delay:.2f} s",
                MessageId.RESTART_SCHEDULED,
                wid=wid,
                pid=pid,
            ),
            Publish("backoff", {"wid": wid, "failures": failures, "delay": round(delay, 3)}),
            StartTimer(RestartDue(wid).key, delay),
        ]

    def _after_exec_failure(self, process: ProcessRecord, reason: str, now: float) -> list[Action]:
        self._exec_failures += 1
        label = f"{self.name}[{process.wid}]"
        limit = self.config.max_retry
        if limit >= 0 and self._exec_failures >= max(limit, 1):
            self.result = WatcherResult.EXEC_FAILED
            self.reason = f"could not start: {reason} ({self._exec_failures} times in a row)"
            return [
                Log(
                    logging.ERROR,
                    f"{label} could not start: {reason}; giving up after "
                    f"{self._exec_failures} failures (max_retry = {limit})",
                    MessageId.START_GAVE_UP,
                    wid=process.wid,
                    pid=process.pid,
                ),
                *self._halt(WatcherPhase.FAILED, now),
            ]
        if self.phase not in RUNNING_PHASES:
            return self._reconcile(now)
        what = f"{label} could not start: {reason}"
        return self._schedule_restart(
            process.wid, what, now, MessageId.PROCESS_START_FAILED, process.pid
        )

    def _defer(
        self, process: ProcessRecord, reason: str, now: float, cause: str
    ) -> list[Action]:
        """A spawn failed for lack of resources, or with the spawner lost: wait, then try again;
        what runs stays.

        One hold (one timer, one event) covers every spawn that fails before it is over, so a
        start of hundreds that runs out of descriptors waits once, not once per process, and a
        lost spawner's unanswered requests make one event. After a shortage the hold backs
        off; after a lost spawner it is a loop turn: the spawns then wait for the next spawner,
        whose start the spawner's handle paces (spawner.Spawner)."""
        self.deferred_spawns += 1
        if self.phase not in RUNNING_PHASES:
            return self._reconcile(now)
        first = cause not in self._deferred_causes
        self._deferred_causes.add(cause)
        if cause == SHORTAGE_CAUSE:
            self.shortage = reason
        if SpawnGate.SHORTAGE in self._gates:
            return self._reconcile(now)
        self._gates.add(SpawnGate.SHORTAGE)
        if cause == SHORTAGE_CAUSE:
            self._shortage_holds += 1
            delay = shortage_delay(
                self._shortage_holds,
                self.config.backoff_initial,
                self.config.backoff_max,
                self._rng,
            )
        else:
            delay = 0.0
        running = len(self._pids)
        wanted = self.config.target_processes
        actions: list[Action] = []
        if first and cause == SHORTAGE_CAUSE:
            actions.append(
                Log(
                    logging.WARNING,
                    f"{self.name}[{process.wid}] cannot start for lack of resources ({reason}); "
                    f"the processes that run are kept ({running} of {wanted} so far), the others "
                    f"wait: retrying in {delay:.2f} s, then with backoff",
                    MessageId.SPAWNS_DEFERRED,
                    wid=process.wid,
                    shared=cause,
                )
            )
        elif first:
            actions.append(
                Log(
                    logging.WARNING,
                    f"{self.name}[{process.wid}] was not started: {reason}; not a failed start: "
                    f"it is asked of the next spawner (the processes that run are kept, "
                    f"{running} of {wanted} so far)",
                    MessageId.SPAWNS_DEFERRED,
                    wid=process.wid,
                    shared=cause,
                )
            )
        else:
            message = f"{self.name}: spawns deferred again ({reason}); retrying in {delay:.2f} s"
            actions.append(Log(logging.DEBUG, message, MessageId.SPAWNS_DEFERRED))
        actions += [
            Publish(
                "spawn_deferred",
                {
                    "wid": process.wid,
                    "cause": cause,
                    "reason": reason,
                    "deferred": self.deferred_spawns,
                    "running": running,
                    "numprocesses": wanted,
                    "retry_in": round(delay, 3),
                },
            ),
            StartTimer(ShortageWaitOver().key, delay),
        ]
        return actions + self._reconcile(now)

    def _end_shortage(self) -> None:
        self.shortage = None
        self._deferred_causes.clear()
        self._shortage_holds = 0
        self._gates.discard(SpawnGate.SHORTAGE)

    def _flap(self, process: ProcessRecord, what: str, now: float) -> list[Action]:
        config = self.config
        give_up = 0 <= config.flapping_max_retry <= self._pauses
        payload = {
            "attempts": config.flapping_attempts,
            "window": config.flapping_window,
            "retry_in": config.flapping_retry_in,
            "tries": self._pauses,
            "max_retry": config.flapping_max_retry,
            "give_up": give_up,
        }
        label = self._label(process)
        if give_up:
            self.result = WatcherResult.FLAPPING
            self.reason = (
                f"flapping: gave up after {self._pauses} pauses "
                f"(flapping.max_retry = {config.flapping_max_retry})"
            )
            message = f"{label} {what}; {self.name} is {self.reason}"
            return [
                Log(
                    logging.ERROR,
                    message,
                    MessageId.FLAPPING_GAVE_UP,
                    wid=process.wid,
                    pid=process.pid,
                ),
                Publish("flapping", payload),
                *self._halt(WatcherPhase.FAILED, now),
            ]
        self._pauses += 1
        self.reason = (
            f"flapping: paused {config.flapping_retry_in:g} s "
            f"(pause {self._pauses} of {config.flapping_max_retry})"
        )
        return [
            Log(
                logging.WARNING,
                f"{label} {what}; {self.name} is {self.reason}",
                MessageId.FLAPPING_PAUSED,
                wid=process.wid,
                pid=process.pid,
            ),
            Publish("flapping", payload),
            *self._halt(WatcherPhase.PAUSED, now),
        ]

    def _reconcile(self, now: float) -> list[Action]:
        """Bring the processes toward what the phase asks for; settle finished transitions."""
        actions: list[Action] = []
        if self.phase in RUNNING_PHASES:
            actions += self._fill_and_trim(now)
            if (
                self._deferred_causes
                and SpawnGate.SHORTAGE not in self._gates
                and self._all_running()
            ):
                over = (
                    ", the resource shortage is over"
                    if SHORTAGE_CAUSE in self._deferred_causes
                    else " again after the loss of the spawner"
                )
                actions.append(
                    Log(
                        logging.INFO,
                        f"{self.name}: all {len(self._pids)} processes run{over} "
                        f"({self.deferred_spawns} spawns deferred so far)",
                        MessageId.SPAWNS_RESUMED,
                    )
                )
                self._end_shortage()
            settling = (WatcherPhase.STARTING, WatcherPhase.START_APPROVED)
            if self.phase in settling and self._all_running():
                if self.phase is WatcherPhase.STARTING and AFTER_START in self.config.hooks:
                    self._enter(WatcherPhase.AFTER_START)
                    actions.append(CallHook(AFTER_START, (AFTER_START, self._start_number)))
                else:
                    self._enter(WatcherPhase.ACTIVE)
                    actions += [
                        Publish("start"),
                        Log(logging.INFO, f"{self.name}: active", MessageId.WATCHER_ACTIVE),
                    ]
        elif self.phase is WatcherPhase.STOPPING and not self.processes:
            destination = self._stop_destination
            self._enter(destination)
            actions.append(Publish("stop"))
            if self._stop_hooks and AFTER_STOP in self.config.hooks:
                actions.append(CallHook(AFTER_STOP))
            if destination is WatcherPhase.PAUSED:
                actions.append(StartTimer(RetryDue().key, self.config.flapping_retry_in))
            elif destination is WatcherPhase.STOPPED:
                actions.append(
                    Log(logging.INFO, f"{self.name}: stopped", MessageId.WATCHER_STOPPED)
                )
                if self.want is Want.UP:
                    actions += self._dispatch(StartAsked(), now)
        return actions

    def _fill_and_trim(self, now: float) -> list[Action]:
        """Stop the processes of workers above numprocesses; spawn the lowest free workers, as
        many as the spawn window has room for (one at a time with a warmup_delay)."""
        ids = self._worker_ids
        if ids.target != self.config.target_processes:  # update_config changed it
            ids.retarget(self.config.target_processes)
        actions: list[Action] = []
        for spawn_id in ids.surplus():
            actions += self._stop_process(self.processes[spawn_id], now)
        if self._gates or self.phase is WatcherPhase.BEFORE_START:  # any SpawnGate holds them
            return actions
        room = SPAWN_WINDOW - self._unborn()
        if self.config.warmup_delay > 0:
            room = min(room, 1)
        for wid in ids.take_lowest(room):
            self._last_spawn_id += 1
            spawn_id = self._last_spawn_id
            if BEFORE_SPAWN in self.config.hooks:
                self._born(ProcessRecord(spawn_id, wid, ProcessPhase.BEFORE_SPAWN))
                actions.append(CallHook(BEFORE_SPAWN, (BEFORE_SPAWN, spawn_id)))
            else:
                self._born(ProcessRecord(spawn_id, wid, ProcessPhase.SPAWNING))
                actions.append(Spawn(spawn_id, wid))
            if self.config.warmup_delay > 0:
                self._gates.add(SpawnGate.WARMUP)
                actions.append(StartTimer(WarmupOver().key, self.config.warmup_delay))
        return actions


def _describe_exit(exit_code: int) -> str:
    if exit_code == EXIT_STATUS_UNKNOWN:
        return "ended (status unknown: a previous arbiter's child)"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"killed by {name}"
    return f"exited with status {exit_code}"


# -- the tables ------------------------------------------------------------------------------------

WatcherHandler = Callable[[Watcher, Any, float], list[Action]]
ProcessHandler = Callable[[Watcher, ProcessRecord, Any, float], list[Action]]

# Every phase, from the named groups: a phase added to none of them fails the completeness test.
_EVERY = HALTED_PHASES | RUNNING_PHASES | STOPPING_PHASES
# No process exists: none is spawned before before_start approves, and a stop ends only once
# every process (asked of the spawner or not) is gone.
_NO_PROCESS = HALTED_PHASES | {WatcherPhase.BEFORE_START}
_WITH_PROCESSES = _EVERY - _NO_PROCESS
_SPAWNING_PHASES = RUNNING_PHASES - {WatcherPhase.BEFORE_START}
_NOT_SPAWNING = _EVERY - _SPAWNING_PHASES
_STALE_START = Ignored("the late answer of a start stopped meanwhile")
_NONE_TO_REPORT = Ignored("no process: a late report about one reaped before")
_NONE_TO_TIME = Ignored("no process: a stale timer of one reaped before")
_NONE_UNANSWERED = Impossible("no process: a spawn or hook unanswered keeps the watcher stopping")
_NOT_ARMED = Impossible("not spawning: a stop cancels the spawns' timers, a start has none")

WATCHER_TABLE: Table[WatcherPhase, WatcherHandler] = (
    Table[WatcherPhase, WatcherHandler]("watcher")
    .on(StartAsked, HALTED_PHASES, Watcher._start_from_rest)
    .on(StartAsked, RUNNING_PHASES, Watcher._start_again)
    .on(StartAsked, STOPPING_PHASES, Watcher._start_after_stop)
    .on(StopAsked, _EVERY, Watcher._stop)
    .on(RestartAsked, HALTED_PHASES, Watcher._start_from_rest)
    .on(RestartAsked, RUNNING_PHASES | STOPPING_PHASES, Watcher._restart)
    .on(ReplaceAsked, _EVERY, Watcher._replace)
    .on(KillAsked, _EVERY, Watcher._kill)
    .on(ConfigUpdated, _EVERY, Watcher._update_config)
    .on(ConfigReplaced, HALTED_PHASES, Watcher._replace_config)
    .on(ConfigReplaced, RUNNING_PHASES | STOPPING_PHASES, Watcher._refuse_replace_config)
    .on(SpawnNoMore, _EVERY, Watcher._spawn_no_more)
    # What concerns one process goes on to PROCESS_TABLE. A spawn answered for a spawn id
    # given up is killed, whatever the phase.
    .on(SpawnedAll, _EVERY, Watcher._route_spawned)
    .on(SpawnFailed, _WITH_PROCESSES, Watcher._route_by_spawn_id)
    .on(SpawnFailed, _NO_PROCESS, _NONE_UNANSWERED)
    .on(Exited, _WITH_PROCESSES, Watcher._route_by_pid)
    .on(Exited, _NO_PROCESS, _NONE_TO_REPORT)
    .on(Notified, _WITH_PROCESSES, Watcher._route_by_pid)
    .on(Notified, _NO_PROCESS, _NONE_TO_REPORT)
    .on(OutputMatched, _WITH_PROCESSES, Watcher._route_by_pid)
    .on(OutputMatched, _NO_PROCESS, _NONE_TO_REPORT)
    .on(BeforeSpawnDone, _WITH_PROCESSES, Watcher._route_hook_answer)
    .on(BeforeSpawnDone, _NO_PROCESS, _NONE_UNANSWERED)
    .on(AfterSpawnDone, _WITH_PROCESSES, Watcher._route_hook_answer)
    .on(AfterSpawnDone, _NO_PROCESS, _NONE_TO_REPORT)
    .on(KillTimeout, _WITH_PROCESSES, Watcher._route_by_spawn_id)
    .on(KillTimeout, _NO_PROCESS, _NONE_TO_TIME)
    .on(MaxAgeReached, _WITH_PROCESSES, Watcher._route_by_spawn_id)
    .on(MaxAgeReached, _NO_PROCESS, _NONE_TO_TIME)
    .on(MinUptimeReached, _WITH_PROCESSES, Watcher._route_by_spawn_id)
    .on(MinUptimeReached, _NO_PROCESS, _NONE_TO_TIME)
    .on(ReadyTimeout, _WITH_PROCESSES, Watcher._route_by_spawn_id)
    .on(ReadyTimeout, _NO_PROCESS, _NONE_TO_TIME)
    .on(WatchdogTimeout, _WITH_PROCESSES, Watcher._route_by_spawn_id)
    .on(WatchdogTimeout, _NO_PROCESS, _NONE_TO_TIME)
    # The watcher's own hooks.
    .on(BeforeStartDone, {WatcherPhase.BEFORE_START}, Watcher._before_start_done)
    .on(BeforeStartDone, _EVERY - {WatcherPhase.BEFORE_START}, _STALE_START)
    .on(AfterStartDone, {WatcherPhase.AFTER_START}, Watcher._after_start_done)
    .on(AfterStartDone, _EVERY - {WatcherPhase.AFTER_START}, _STALE_START)
    .on(BeforeStopDone, {WatcherPhase.BEFORE_STOP}, Watcher._before_stop_done)
    .on(
        BeforeStopDone,
        _EVERY - {WatcherPhase.BEFORE_STOP},
        Impossible("BEFORE_STOP is left only by this answer"),
    )
    # The watcher's own timers.
    .on(RestartDue, _SPAWNING_PHASES, Watcher._restart_due)
    .on(RestartDue, _NOT_SPAWNING, _NOT_ARMED)
    .on(WarmupOver, _SPAWNING_PHASES, Watcher._warmup_over)
    .on(WarmupOver, _NOT_SPAWNING, _NOT_ARMED)
    .on(ShortageWaitOver, _SPAWNING_PHASES, Watcher._shortage_wait_over)
    .on(ShortageWaitOver, _NOT_SPAWNING, _NOT_ARMED)
    .on(RetryDue, {WatcherPhase.PAUSED}, Watcher._retry_due)
    .on(
        RetryDue,
        _EVERY - {WatcherPhase.PAUSED},
        Impossible("leaving PAUSED cancels the flapping pause"),
    )
)

_CANCELLED = frozenset({ProcessPhase.BEFORE_SPAWN_CANCELLED, ProcessPhase.SPAWNING_CANCELLED})
_HOOKED = frozenset({ProcessPhase.BEFORE_SPAWN, ProcessPhase.BEFORE_SPAWN_CANCELLED})
_ASKED = frozenset({ProcessPhase.SPAWNING, ProcessPhase.SPAWNING_CANCELLED})
_NO_PID = Impossible("no pid yet: not found by a pid, no timer of its own")
_ANSWERED = Impossible("a spawn is answered once")
_CANCELLED_AT_STOP = Impossible("the stop cancels this timer")

PROCESS_TABLE: Table[ProcessPhase, ProcessHandler] = (
    Table[ProcessPhase, ProcessHandler]("process")
    .on(StopProcess, {ProcessPhase.BEFORE_SPAWN}, Watcher._cancel_before_spawn)
    .on(StopProcess, {ProcessPhase.SPAWNING}, Watcher._cancel_spawn)
    .on(StopProcess, _CANCELLED, Ignored("already cancelled"))
    .on(StopProcess, UP_PROCESS_PHASES, Watcher._stop_running)
    .on(StopProcess, STOP_PROCESS_PHASES, Ignored("already being stopped"))
    .on(Spawned, {ProcessPhase.SPAWNING}, Watcher._spawned)
    .on(Spawned, {ProcessPhase.SPAWNING_CANCELLED}, Watcher._spawned_unwanted)
    .on(Spawned, _HOOKED, Impossible("its spawn is asked once before_spawn approves"))
    .on(Spawned, WITH_PID_PHASES, _ANSWERED)
    .on(SpawnFailed, _ASKED, Watcher._spawn_failed)
    .on(SpawnFailed, _HOOKED, Impossible("its spawn is asked once before_spawn approves"))
    .on(SpawnFailed, WITH_PID_PHASES, _ANSWERED)
    .on(Exited, UP_PROCESS_PHASES | FAILED_START_PHASES, Watcher._exited_unexpectedly)
    .on(Exited, PLAIN_STOP_PHASES, Watcher._exited_stopped)
    .on(Exited, UNBORN_PHASES, _NO_PID)
    .on(Notified, UP_PROCESS_PHASES, Watcher._notified)
    .on(Notified, STOP_PROCESS_PHASES, Ignored("sent before its stop"))
    .on(Notified, UNBORN_PHASES, _NO_PID)
    .on(OutputMatched, {ProcessPhase.RUNNING}, Watcher._output_matched)
    .on(OutputMatched, {ProcessPhase.READY}, Ignored("already ready"))
    .on(OutputMatched, STOP_PROCESS_PHASES, Ignored("written before its stop"))
    .on(OutputMatched, UNBORN_PHASES, _NO_PID)
    .on(BeforeSpawnDone, {ProcessPhase.BEFORE_SPAWN}, Watcher._before_spawn_done)
    .on(
        BeforeSpawnDone,
        {ProcessPhase.BEFORE_SPAWN_CANCELLED},
        Watcher._before_spawn_done_cancelled,
    )
    .on(BeforeSpawnDone, _ASKED | WITH_PID_PHASES, Impossible("before_spawn is answered once"))
    .on(AfterSpawnDone, WITH_PID_PHASES, Watcher._after_spawn_done)
    .on(AfterSpawnDone, UNBORN_PHASES, Impossible("after_spawn is asked once its pid is known"))
    .on(KillTimeout, _SIGKILL_AFTER, Watcher._kill_timeout)
    .on(
        KillTimeout,
        UNBORN_PHASES | UP_PROCESS_PHASES | {ProcessPhase.STOP_SIGKILL,
                                              ProcessPhase.READY_TIMEOUT_SIGKILL},
        Impossible("armed with the stop signal, and fires once"),
    )
    .on(MaxAgeReached, UP_PROCESS_PHASES, Watcher._max_age_reached)
    .on(MaxAgeReached, STOP_PROCESS_PHASES, _CANCELLED_AT_STOP)
    .on(MaxAgeReached, UNBORN_PHASES, _NO_PID)
    .on(MinUptimeReached, UP_PROCESS_PHASES, Watcher._min_uptime_reached)
    .on(MinUptimeReached, STOP_PROCESS_PHASES, _CANCELLED_AT_STOP)
    .on(MinUptimeReached, UNBORN_PHASES, _NO_PID)
    .on(ReadyTimeout, {ProcessPhase.RUNNING}, Watcher._ready_timeout)
    .on(ReadyTimeout, {ProcessPhase.READY}, Impossible("cancelled when it gets ready"))
    .on(ReadyTimeout, STOP_PROCESS_PHASES, _CANCELLED_AT_STOP)
    .on(ReadyTimeout, UNBORN_PHASES, _NO_PID)
    .on(WatchdogTimeout, {ProcessPhase.READY}, Watcher._watchdog_timeout)
    .on(WatchdogTimeout, {ProcessPhase.RUNNING}, Impossible("armed once it is ready"))
    .on(WatchdogTimeout, STOP_PROCESS_PHASES, _CANCELLED_AT_STOP)
    .on(WatchdogTimeout, UNBORN_PHASES, _NO_PID)
)
