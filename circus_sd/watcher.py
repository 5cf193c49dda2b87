"""The watcher state machine: what to do with a watcher's processes, given an event and the time.

Pure logic: no I/O, no clock of its own. Every method takes the current monotonic time and returns
actions (spawn, signal, timers, events, log lines) for the arbiter to execute.

Hooks (Circus's `hooks.NAME`) that can change what happens are gates here: the watcher asks for
the call (a `CallHook` action with a token) and waits for `hook_done` before going on (spawning,
becoming active, stopping processes). Running the hook is the arbiter's business (threads,
deadlines); the hooks tied to one signal or one exit (before/after_signal, before/after_reap)
are run by the arbiter around that I/O and never reach the state machine.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import signal
from collections.abc import Hashable, Iterable

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
from circus_sd.restart_policy import (
    SHORTAGE_CAUSE,
    SPAWNER_LOST_CAUSE,
    FlappingDetector,
    backoff_delay,
    is_shortage,
    shortage_delay,
)
from circus_sd.states import (
    HALTED_STATES,
    LIVE_PROCESS_STATES,
    PROCESS_TRANSITIONS,
    RUNNING_STATES,
    WATCHER_TRANSITIONS,
    ProcessState,
    Want,
    WatcherResult,
    WatcherState,
)

# Timer keys. A process's timers carry its spawn id, a worker's its wid.
KILL = "kill"  # graceful_timeout ran out: SIGKILL
MAX_AGE = "max_age"  # time to replace the process
HEALTHY = "healthy"  # the process outlived min_uptime: failure counters reset
RESTART = "restart"  # a worker's backoff is over
WARMUP = "warmup"  # warmup_delay since the last spawn is over
RETRY = "retry"  # a flapping pause is over
READY_TIMEOUT = "ready_timeout"  # a notify process did not send READY=1 in time
WATCHDOG = "watchdog"  # a notify process stopped sending WATCHDOG=1
SHORTAGE = "shortage"  # the wait after deferred spawns (a shortage, a lost spawner) is over

# The most processes of one watcher being spawned at a time (asked of the spawner, or exec'ing).
# A start of N processes goes in steps of this many: each step is planned when the previous
# ones have answered, so the loop keeps serving (status, a stop) all along, and a stop leaves at
# most this many spawns to wind down. Large enough to keep the spawner's pipeline full.
SPAWN_WINDOW = 128

# Hooks the watcher waits for (tokens carry the start/stop number or the spawn id), and the
# after_stop notification.
BEFORE_START = "before_start"
AFTER_START = "after_start"
BEFORE_SPAWN = "before_spawn"
AFTER_SPAWN = "after_spawn"
BEFORE_STOP = "before_stop"
AFTER_STOP = "after_stop"


@dataclasses.dataclass
class ProcessRecord:
    """One process of a watcher, from the spawn request until it has been reaped."""

    spawn_id: int
    wid: int
    state: ProcessState
    pid: int | None = None
    started_at: float = 0.0
    # A stop asked for while the spawner had not yet answered with a pid.
    stop_requested: bool = False
    # sd_notify from the process (watchers with `notify`): READY=1 seen, last STATUS=.
    ready: bool = False
    status: str = ""
    # Stopped for not becoming ready in time: its exit counts as a failed start.
    failed_start: bool = False
    # Waiting for its before_spawn (no pid yet) or after_spawn hook.
    hook_pending: bool = False

    def move_to(self, state: ProcessState) -> None:
        if state not in PROCESS_TRANSITIONS[self.state]:
            raise AssertionError(f"process {self.pid}: {self.state} -> {state} not allowed")
        self.state = state


class Watcher:
    """Decides, for one watcher, when processes are spawned, restarted, paused and stopped."""

    def __init__(self, config: WatcherConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.want = Want.DOWN
        self.state = WatcherState.STOPPED
        self.result = WatcherResult.SUCCESS
        # Why the watcher is paused or failed, in words, for status and logs.
        self.reason = ""
        self.processes: dict[int, ProcessRecord] = {}
        self.restarts = 0
        self._rng = rng or random.Random()
        self._spawn_ids = itertools.count(1)
        self._pids: dict[int, int] = {}
        self._failures: dict[int, int] = {}  # wid -> consecutive failed starts
        self._backoff: set[int] = set()  # wids waiting on a RESTART timer
        self._retired: set[int] = set()  # wids not refilled (respawn = false)
        self._exec_failures = 0
        self._pauses = 0
        self._warming_up = False
        # Spawns that failed for lack of resources (restart_policy.is_shortage) or because the
        # spawner was lost before it answered: deferred, counted apart, never toward max_retry
        # or flapping. An episode lasts from the first such failure until every wanted process
        # runs (or the watcher stops); while `_holding`, nothing is spawned until the SHORTAGE
        # timer.
        self.deferred_spawns = 0
        self.shortage: str | None = None  # why, during an episode with a shortage
        self._deferred_causes: set[str] = set()  # restart_policy's *_CAUSE, this episode
        self._shortage_holds = 0
        self._holding = False
        # The arbiter is shutting down: nothing more is spawned, whatever comes first.
        self._final = False
        self._halt_to = WatcherState.STOPPED
        self._flapping = FlappingDetector(config.flapping_attempts, config.flapping_window)
        # Hook gates: which start/stop they belong to, and whether they are being waited for.
        self._start_number = 0
        self._stop_number = 0
        self._before_start_pending = False
        self._after_start_pending = False
        self._after_start_approved = False
        self._before_stop_pending = False
        self._stop_hooks = False  # this stop calls before_stop/after_stop

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def pids(self) -> list[int]:
        return sorted(p.pid for p in self.processes.values() if p.pid is not None)

    @property
    def wids(self) -> list[int]:
        return sorted({p.wid for p in self.processes.values() if p.pid is not None})

    def pid_of(self, wid: int) -> int | None:
        for process in self.processes.values():
            if process.wid == wid and process.state is ProcessState.RUNNING:
                return process.pid
        return None

    @property
    def start_settled(self) -> bool:
        """A start has done what it can now: every worker was spawned (and is ready, if it says
        so), is backing off or failed."""
        return self.start_settled_for(readiness=True)

    def start_settled_for(self, readiness: bool) -> bool:
        """`start_settled`; without `readiness`, a running process not ready yet counts too."""
        if self.state is not WatcherState.STARTING:
            return True
        pending = any(self._start_pending(p, readiness) for p in self.processes.values())
        gated = self._before_start_pending or self._after_start_pending
        return not pending and not self._warming_up and not gated

    def _start_pending(self, process: ProcessRecord, readiness: bool = True) -> bool:
        """Spawning, waiting for a hook, or running but not ready yet (`awaits_readiness`)."""
        if process.state is ProcessState.SPAWNING or process.hook_pending:
            return True
        return (
            readiness
            and self.config.awaits_readiness
            and process.state is ProcessState.RUNNING
            and not process.ready
        )

    def process_by_pid(self, pid: int) -> ProcessRecord | None:
        spawn_id = self._pids.get(pid)
        return None if spawn_id is None else self.processes.get(spawn_id)

    # -- commands --------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        self.want = Want.UP
        if self.state in RUNNING_STATES:
            return self._reconcile(now)
        if self.state is WatcherState.STOPPING:
            # Finish stopping, then start again (want is up); an operator's start overrides a
            # flapping pause.
            self._halt_to = WatcherState.STOPPED
            return []
        actions: list[Action] = [CancelTimer((RETRY,))]
        self.result = WatcherResult.SUCCESS
        self.reason = ""
        self._pauses = 0
        self._exec_failures = 0
        self._failures.clear()
        self._retired.clear()
        self._flapping.reset()
        self._end_shortage()
        return actions + self._begin_start(now)

    def stop(self, now: float) -> list[Action]:
        self.want = Want.DOWN
        return self._halt(WatcherState.STOPPED, now)

    def spawn_no_more(self) -> None:
        """The arbiter is shutting down: plan no spawn from now on (a start in progress ends
        with the spawns already asked for, SPAWN_WINDOW at most); the stop comes in its turn."""
        self._final = True

    def restart(self, now: float) -> list[Action]:
        if self.state in HALTED_STATES:
            return self.start(now)
        self.want = Want.UP
        return self._halt(WatcherState.STOPPED, now)

    def replace_processes(self, now: float, wids: set[int] | None = None) -> list[Action]:
        """Stop running processes (of `wids`, or all); their workers respawn at once."""
        actions: list[Action] = []
        for process in list(self.processes.values()):
            if process.state is ProcessState.RUNNING and (wids is None or process.wid in wids):
                actions += self._stop_process(process)
        return actions + self._reconcile(now)

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
        actions: list[Action] = []
        for process in list(self.processes.values()):
            if process.state is ProcessState.RUNNING and pid in (None, process.pid):
                actions += self._stop_process(process, signum, graceful_timeout)
        return actions + self._reconcile(now)

    def update_config(self, config: WatcherConfig, now: float) -> list[Action]:
        """Apply options that take effect without restarting processes (numprocesses, timeouts)."""
        self.config = config
        self._flapping.attempts = config.flapping_attempts
        self._flapping.window = config.flapping_window
        return self._reconcile(now)

    def replace_config(self, config: WatcherConfig) -> None:
        """Swap in a config that changes how processes are made; only while halted."""
        assert self.state in HALTED_STATES, "replace_config needs a stopped watcher"
        self.config = config
        self._flapping = FlappingDetector(config.flapping_attempts, config.flapping_window)

    # -- events ----------------------------------------------------------------------------------

    def spawned(self, spawn_id: int, pid: int, now: float) -> list[Action]:
        return self.spawned_all([(spawn_id, pid)], now)

    def spawned_all(self, spawns: Iterable[tuple[int, int]], now: float) -> list[Action]:
        """Processes (spawn id, pid) exec'd their program: one reconciliation for all of them
        (a start of N processes would otherwise scan N records N times)."""
        actions: list[Action] = []
        for spawn_id, pid in spawns:
            actions += self._record_spawn(spawn_id, pid, now)
        return actions + self._reconcile(now)

    def _record_spawn(self, spawn_id: int, pid: int, now: float) -> list[Action]:
        process = self.processes.get(spawn_id)
        if process is None:
            return [Signal(pid, signal.SIGKILL, tree=True)]
        process.pid = pid
        process.started_at = now
        process.move_to(ProcessState.RUNNING)
        self._pids[pid] = spawn_id
        actions: list[Action] = [
            Publish("spawn", {"process_pid": pid}),
            Log(logging.DEBUG, f"{self._label(process)} spawned"),
        ]
        if self.config.awaits_readiness and self.config.ready_timeout > 0:
            actions.append(StartTimer((READY_TIMEOUT, spawn_id), self.config.ready_timeout))
        if self.config.max_age > 0:
            lifetime = self.config.max_age + self._rng.uniform(0, self.config.max_age_variance)
            actions.append(StartTimer((MAX_AGE, spawn_id), lifetime))
        if self._failures.get(process.wid) or self._pauses or self._exec_failures:
            actions.append(StartTimer((HEALTHY, spawn_id), self.config.min_uptime))
        if process.stop_requested:
            actions += self._stop_process(process)
        elif AFTER_SPAWN in self.config.hooks and self.state in RUNNING_STATES:
            process.hook_pending = True
            actions.append(CallHook(AFTER_SPAWN, (AFTER_SPAWN, spawn_id), {"pid": pid}))
        return actions

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
        process = self.processes.pop(spawn_id, None)
        if process is None:
            return []
        if spawner_lost:
            return self._defer(process, reason, now, SPAWNER_LOST_CAUSE)
        if is_shortage(code):
            return self._defer(process, reason, now, SHORTAGE_CAUSE)
        return self._after_exec_failure(process, reason, now)

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
        spawn_id = self._pids.pop(pid, None)
        if spawn_id is None:
            return []
        process = self.processes.pop(spawn_id)
        actions: list[Action] = [
            CancelTimer((KILL, spawn_id)),
            CancelTimer((MAX_AGE, spawn_id)),
            CancelTimer((HEALTHY, spawn_id)),
            *self._cancel_notify_timers(spawn_id),
            Publish("reap", {"process_pid": pid, "exit_code": exit_code}),
        ]
        if process.state not in LIVE_PROCESS_STATES and not process.failed_start:
            actions.append(Log(logging.DEBUG, f"{self._label(process)} stopped ({exit_code})"))
            return actions + self._reconcile(now)
        if exec_error is not None:
            return actions + self._after_exec_failure(process, exec_error, now)
        uptime = now - process.started_at
        how = _describe_exit(exit_code)
        if uptime >= self.config.min_uptime and not process.failed_start:
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

    def notified(self, pid: int, message: dict[str, str], now: float) -> list[Action]:
        """An sd_notify datagram from a process's own NOTIFY_SOCKET."""
        process = self.process_by_pid(pid)
        if process is None or process.state is not ProcessState.RUNNING:
            return []
        actions: list[Action] = []
        if "STATUS" in message:
            process.status = message["STATUS"]
        if message.get("READY") == "1" and not process.ready:
            actions += self._become_ready(process, "READY=1")
        if message.get("WATCHDOG") == "1" and process.ready and self.config.watchdog_sec > 0:
            actions.append(StartTimer((WATCHDOG, process.spawn_id), self.config.watchdog_sec))
        if "ERRNO" in message:
            actions.append(
                Log(logging.WARNING, f"{self._label(process)} reports errno {message['ERRNO']}")
            )
        return actions + self._reconcile(now)

    def output_matched(self, pid: int, now: float) -> list[Action]:
        """A line of the process's output matched `ready_log_line`."""
        process = self.process_by_pid(pid)
        if process is None or process.state is not ProcessState.RUNNING or process.ready:
            return []
        return self._become_ready(process, "ready_log_line") + self._reconcile(now)

    def _become_ready(self, process: ProcessRecord, how: str) -> list[Action]:
        process.ready = True
        actions: list[Action] = [
            CancelTimer((READY_TIMEOUT, process.spawn_id)),
            Publish("ready", {"process_pid": process.pid, "wid": process.wid}),
            Log(logging.INFO, f"{self._label(process)} ready ({how})"),
        ]
        if self.config.notify and self.config.watchdog_sec > 0:
            actions.append(StartTimer((WATCHDOG, process.spawn_id), self.config.watchdog_sec))
        return actions

    def hook_done(self, token: Hashable, approved: bool, now: float) -> list[Action]:
        """The outcome of a `CallHook` with a token: `approved` is False when the hook returned
        False, or failed (raised, timed out) and its errors are not ignored."""
        assert isinstance(token, tuple)
        kind, key = token
        if kind == BEFORE_START:
            if not self._before_start_pending or key != self._start_number:
                return []
            self._before_start_pending = False
            return self._reconcile(now) if approved else self._abort(kind, now)
        if kind == AFTER_START:
            if not self._after_start_pending or key != self._start_number:
                return []
            self._after_start_pending = False
            if not approved:
                return self._abort(kind, now)
            self._after_start_approved = True
            return self._reconcile(now)
        if kind == BEFORE_STOP:
            if not self._before_stop_pending or key != self._stop_number:
                return []
            self._before_stop_pending = False
            actions: list[Action] = []
            for running in list(self.processes.values()):
                actions += self._stop_process(running)
            return actions + self._reconcile(now)
        process = self.processes.get(key)
        if process is None or not process.hook_pending:
            return []
        process.hook_pending = False
        if kind == BEFORE_SPAWN:
            if not approved and self.state in RUNNING_STATES:
                del self.processes[key]
                return self._abort(kind, now)
            if (
                process.stop_requested
                or self.state not in RUNNING_STATES
                or process.wid > self.config.target_processes
            ):
                del self.processes[key]
                return self._reconcile(now)
            return [Spawn(process.spawn_id, process.wid)]
        if kind == AFTER_SPAWN and not approved and self.state in RUNNING_STATES:
            return self._abort(kind, now)
        return self._reconcile(now)

    def timer(self, key: Hashable, now: float) -> list[Action]:
        assert isinstance(key, tuple)
        kind = key[0]
        if kind in (READY_TIMEOUT, WATCHDOG):
            return self._notify_timeout(kind, key[1], now)
        if kind == KILL:
            process = self.processes.get(key[1])
            if process is None or process.pid is None:
                return []
            process.move_to(ProcessState.STOP_SIGKILL)
            return [
                Signal(process.pid, signal.SIGKILL, tree=True),
                Publish("kill", {"process_pid": process.pid}),
                Log(
                    logging.WARNING,
                    f"{self._label(process)} still running when its graceful timeout ran out: "
                    "SIGKILL",
                ),
            ]
        if kind == MAX_AGE:
            process = self.processes.get(key[1])
            if process is None or process.state is not ProcessState.RUNNING:
                return []
            message = f"{self._label(process)} reached max_age: replacing it"
            return [Log(logging.INFO, message), *self._stop_process(process), *self._reconcile(now)]
        if kind == HEALTHY:
            process = self.processes.get(key[1])
            if process is not None and process.state is ProcessState.RUNNING:
                self._failures.pop(process.wid, None)
                self._exec_failures = 0
                self._pauses = 0
            return []
        if kind == RESTART:
            self._backoff.discard(key[1])
        elif kind == SHORTAGE:
            self._holding = False
        elif kind == WARMUP:
            self._warming_up = False
        elif kind == RETRY:
            if self.state is not WatcherState.PAUSED or self.want is not Want.UP:
                return []
            self._flapping.reset()
            self._failures.clear()
            return [
                Log(logging.INFO, f"{self.name}: flapping pause over, starting again"),
                *self._begin_start(now),
            ]
        return self._reconcile(now)

    # -- inner workings --------------------------------------------------------------------------

    def _cancel_notify_timers(self, spawn_id: int) -> list[Action]:
        if not self.config.awaits_readiness:
            return []
        return [CancelTimer((READY_TIMEOUT, spawn_id)), CancelTimer((WATCHDOG, spawn_id))]

    def _notify_timeout(self, kind: str, spawn_id: int, now: float) -> list[Action]:
        process = self.processes.get(spawn_id)
        if process is None or process.state is not ProcessState.RUNNING:
            return []
        label = self._label(process)
        if kind == READY_TIMEOUT:
            if process.ready:
                return []
            process.failed_start = True
            message = f"{label} not ready {self.config.ready_timeout:g} s after its start"
            stop = self._stop_process(process)
        else:
            message = f"{label} sent no WATCHDOG=1 for {self.config.watchdog_sec:g} s"
            stop = self._stop_process(process, signal.SIGABRT)
        return [Log(logging.WARNING, f"{message}: restarting it"), *stop, *self._reconcile(now)]

    def _set_state(self, state: WatcherState) -> None:
        if state not in WATCHER_TRANSITIONS[self.state]:
            raise AssertionError(f"watcher {self.name}: {self.state} -> {state} not allowed")
        self.state = state

    def _label(self, process: ProcessRecord) -> str:
        return f"{self.name}[{process.wid}] pid {process.pid}"

    def _begin_start(self, now: float) -> list[Action]:
        self._set_state(WatcherState.STARTING)
        self._start_number += 1
        self._after_start_approved = False
        count = self.config.target_processes
        actions: list[Action] = [Log(logging.INFO, f"{self.name}: starting {count} process(es)")]
        if BEFORE_START in self.config.hooks:
            self._before_start_pending = True
            return [*actions, CallHook(BEFORE_START, (BEFORE_START, self._start_number))]
        return actions + self._reconcile(now)

    def _abort(self, hook: str, now: float) -> list[Action]:
        """A hook said no to the start (Circus: returning False stops the watcher)."""
        self.result = WatcherResult.HOOK_ABORTED
        self.reason = f"start aborted by the {hook} hook"
        message = f"{self.name}: the {hook} hook returned False or failed: stopping the watcher"
        # Circus calls no stop hook when before_start refuses: nothing was started.
        stop_hooks = hook != BEFORE_START
        return [Log(logging.ERROR, message), *self._halt(WatcherState.FAILED, now, stop_hooks)]

    def _halt(
        self, destination: WatcherState, now: float, stop_hooks: bool = True
    ) -> list[Action]:
        """Stop every process, then rest in `destination` (stopped, paused or failed).

        With a before_stop hook, the processes are stopped once it has returned.
        """
        actions: list[Action] = [CancelTimer((RESTART, wid)) for wid in sorted(self._backoff)]
        self._backoff.clear()
        if self._holding:
            actions.append(CancelTimer((SHORTAGE,)))
        self._end_shortage()
        self._before_start_pending = self._after_start_pending = False
        if self._warming_up:
            self._warming_up = False
            actions.append(CancelTimer((WARMUP,)))
        if self.state in HALTED_STATES:
            if self.state is not destination and destination is WatcherState.STOPPED:
                actions.append(CancelTimer((RETRY,)))
                self._set_state(destination)
            return actions
        self._halt_to = destination
        if self.state is not WatcherState.STOPPING:
            self._set_state(WatcherState.STOPPING)
            self._stop_number += 1
            self._stop_hooks = stop_hooks
            if stop_hooks and BEFORE_STOP in self.config.hooks:
                self._before_stop_pending = True
                return [*actions, CallHook(BEFORE_STOP, (BEFORE_STOP, self._stop_number))]
        elif self._before_stop_pending:
            return actions
        for process in list(self.processes.values()):
            actions += self._stop_process(process)
        return actions + self._reconcile(now)

    def _stop_process(
        self, process: ProcessRecord, signum: int | None = None, timeout: float | None = None
    ) -> list[Action]:
        signum = self.config.stop_signal if signum is None else signum
        timeout = self.config.graceful_timeout if timeout is None else timeout
        if process.state is ProcessState.SPAWNING:
            process.stop_requested = True
            return []
        if process.state is not ProcessState.RUNNING:
            return []
        assert process.pid is not None
        actions: list[Action] = [
            CancelTimer((MAX_AGE, process.spawn_id)),
            CancelTimer((HEALTHY, process.spawn_id)),
            *self._cancel_notify_timers(process.spawn_id),
        ]
        if timeout <= 0:
            process.move_to(ProcessState.STOP_SIGKILL)
            return [
                *actions,
                Signal(process.pid, signal.SIGKILL, tree=True),
                Publish("kill", {"process_pid": process.pid}),
            ]
        process.move_to(ProcessState.STOP_SIGNAL)
        return [
            *actions,
            Signal(process.pid, signum, tree=self.config.stop_children),
            Publish("kill", {"process_pid": process.pid}),
            StartTimer((KILL, process.spawn_id), timeout),
        ]

    def _after_exit(self, process: ProcessRecord, what: str, now: float) -> list[Action]:
        """An unexpected exit that is not flapping: restart the worker, maybe after a backoff."""
        label = self._label(process)
        if not self.config.respawn:
            self._retired.add(process.wid)
            return [Log(logging.INFO, f"{label} {what}; not restarted (respawn = false)")]
        if self.state not in RUNNING_STATES:
            return [Log(logging.INFO, f"{label} {what}"), *self._reconcile(now)]
        return self._schedule_restart(process.wid, f"{label} {what}", now)

    def _schedule_restart(self, wid: int, what: str, now: float) -> list[Action]:
        self.restarts += 1
        failures = max(self._failures.get(wid, 0), self._exec_failures)
        delay = backoff_delay(
            failures, self.config.backoff_initial, self.config.backoff_max, self._rng
        )
        if delay <= 0:
            return [Log(logging.INFO, f"{what}; restarting"), *self._reconcile(now)]
        self._backoff.add(wid)
        return [
            Log(logging.WARNING, f"{what}; restarting in {delay:.2f} s"),
            Publish("backoff", {"wid": wid, "failures": failures, "delay": round(delay, 3)}),
            StartTimer((RESTART, wid), delay),
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
                ),
                *self._halt(WatcherState.FAILED, now),
            ]
        if self.state not in RUNNING_STATES:
            return self._reconcile(now)
        return self._schedule_restart(process.wid, f"{label} could not start: {reason}", now)

    def _defer(
        self, process: ProcessRecord, reason: str, now: float, cause: str
    ) -> list[Action]:
        """A spawn failed for lack of resources, or with the spawner lost: wait, then try again;
        what runs stays.

        One hold (one timer, one event) covers every spawn that fails before it is over, so a
        start of hundreds that runs out of descriptors waits once, not once per process, and a
        lost spawner's unanswered requests make one event. After a shortage the hold backs
        off; after a lost spawner it is a loop turn: the spawns then wait for the next spawner,
        whose start the spawner's handle paces (spawn_client.Spawner)."""
        self.deferred_spawns += 1
        if self.state not in RUNNING_STATES:
            return self._reconcile(now)
        first = cause not in self._deferred_causes
        self._deferred_causes.add(cause)
        if cause == SHORTAGE_CAUSE:
            self.shortage = reason
        if self._holding:
            return self._reconcile(now)
        self._holding = True
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
        running = len(self.pids)
        wanted = self.config.target_processes
        actions: list[Action] = []
        if first and cause == SHORTAGE_CAUSE:
            actions.append(
                Log(
                    logging.WARNING,
                    f"{self.name}[{process.wid}] cannot start for lack of resources ({reason}); "
                    f"the processes that run are kept ({running} of {wanted} so far), the others "
                    f"wait: retrying in {delay:.2f} s, then with backoff",
                )
            )
        elif first:
            actions.append(
                Log(
                    logging.WARNING,
                    f"{self.name}[{process.wid}] was not started: {reason}; not a failed start: "
                    f"it is asked of the next spawner (the processes that run are kept, "
                    f"{running} of {wanted} so far)",
                )
            )
        else:
            message = f"{self.name}: spawns deferred again ({reason}); retrying in {delay:.2f} s"
            actions.append(Log(logging.DEBUG, message))
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
            StartTimer((SHORTAGE,), delay),
        ]
        return actions + self._reconcile(now)

    def _end_shortage(self) -> None:
        self.shortage = None
        self._deferred_causes.clear()
        self._shortage_holds = 0
        self._holding = False

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
                Log(logging.ERROR, message),
                Publish("flapping", payload),
                *self._halt(WatcherState.FAILED, now),
            ]
        self._pauses += 1
        self.reason = (
            f"flapping: paused {config.flapping_retry_in:g} s "
            f"(pause {self._pauses} of {config.flapping_max_retry})"
        )
        return [
            Log(logging.WARNING, f"{label} {what}; {self.name} is {self.reason}"),
            Publish("flapping", payload),
            *self._halt(WatcherState.PAUSED, now),
        ]

    def _reconcile(self, now: float) -> list[Action]:
        """Bring the processes toward what the state asks for; settle finished transitions."""
        actions: list[Action] = []
        if self.state in RUNNING_STATES:
            actions += self._fill_and_trim(now)
            if self._deferred_causes and not self._holding and self._all_running():
                over = (
                    ", the resource shortage is over"
                    if SHORTAGE_CAUSE in self._deferred_causes
                    else " again after the loss of the spawner"
                )
                actions.append(
                    Log(
                        logging.INFO,
                        f"{self.name}: all {len(self.pids)} processes run{over} "
                        f"({self.deferred_spawns} spawns deferred so far)",
                    )
                )
                self._end_shortage()
            started = (
                self.state is WatcherState.STARTING
                and not self._before_start_pending
                and self._all_running()
            )
            if started and AFTER_START in self.config.hooks and not self._after_start_approved:
                if not self._after_start_pending:
                    self._after_start_pending = True
                    actions.append(CallHook(AFTER_START, (AFTER_START, self._start_number)))
            elif started:
                self._set_state(WatcherState.ACTIVE)
                actions += [Publish("start"), Log(logging.INFO, f"{self.name}: active")]
        elif (
            self.state is WatcherState.STOPPING
            and not self.processes
            and not self._before_stop_pending
        ):
            destination = self._halt_to
            self._set_state(destination)
            actions.append(Publish("stop"))
            if self._stop_hooks and AFTER_STOP in self.config.hooks:
                actions.append(CallHook(AFTER_STOP))
            if destination is WatcherState.PAUSED:
                actions.append(StartTimer((RETRY,), self.config.flapping_retry_in))
            elif destination is WatcherState.STOPPED:
                actions.append(Log(logging.INFO, f"{self.name}: stopped"))
                if self.want is Want.UP:
                    actions += self.start(now)
        return actions

    def _fill_and_trim(self, now: float) -> list[Action]:
        target = self.config.target_processes
        actions: list[Action] = []
        live_wids = set()
        spawning = 0
        for process in list(self.processes.values()):
            spawning += process.state is ProcessState.SPAWNING
            if process.state not in LIVE_PROCESS_STATES and not process.failed_start:
                continue
            if process.wid > target:
                actions += self._stop_process(process)
            else:
                live_wids.add(process.wid)
        if self._holding or self._final:
            return actions
        room = SPAWN_WINDOW - spawning
        for wid in range(1, target + 1):
            if self._warming_up or self._before_start_pending or room <= 0:
                break
            if wid in live_wids or wid in self._backoff or wid in self._retired:
                continue
            room -= 1
            spawn_id = next(self._spawn_ids)
            record = ProcessRecord(spawn_id, wid, ProcessState.SPAWNING)
            self.processes[spawn_id] = record
            if BEFORE_SPAWN in self.config.hooks:
                record.hook_pending = True
                actions.append(CallHook(BEFORE_SPAWN, (BEFORE_SPAWN, spawn_id)))
            else:
                actions.append(Spawn(spawn_id, wid))
            if self.config.warmup_delay > 0:
                self._warming_up = True
                actions.append(StartTimer((WARMUP,), self.config.warmup_delay))
        return actions

    def _all_running(self) -> bool:
        """Every wanted worker has a running (and, if it must say so, ready) process."""
        running = {
            p.wid
            for p in self.processes.values()
            if p.state is ProcessState.RUNNING
            and (p.ready or not self.config.awaits_readiness)
            and not p.hook_pending
        }
        # Stops at the first missing worker: no set of every wanted wid (numprocesses may be big).
        wanted = range(1, self.config.target_processes + 1)
        return all(wid in running or wid in self._retired for wid in wanted)


def _describe_exit(exit_code: int) -> str:
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"killed by {name}"
    return f"exited with status {exit_code}"
