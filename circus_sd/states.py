"""Named states of watchers and processes, and the transitions allowed between them.

Two levels: the detailed phases the state machine runs on (each waiting situation named), and
the public states clients see (status, events, Circus's four statuses), derived from the phases.
"""

from __future__ import annotations

import enum


class _Named(enum.Enum):
    """An enum whose members hash as the singletons they are (each equal only to itself):
    Enum's own __hash__ is Python code, run at each set or table lookup of a phase, tens of
    times per process started and stopped."""

    __hash__ = object.__hash__


class Want(_Named):
    """What the operator asked for, kept apart from what is (runit's want vs state)."""

    UP = "up"
    DOWN = "down"


# -- what clients see ------------------------------------------------------------------------------


class WatcherState(_Named):
    STOPPED = "stopped"
    STARTING = "starting"
    ACTIVE = "active"
    STOPPING = "stopping"
    # Flapping: processes stopped, a timer will start the watcher again.
    PAUSED = "paused"
    # Flapping `max_retry` pauses, or `max_retry` failed execs: stopped until told to start.
    FAILED = "failed"

    @property
    def circus_status(self) -> str:
        """The status string a Circus client expects (it knows only four)."""
        if self in (WatcherState.PAUSED, WatcherState.FAILED):
            return "stopped"
        return str(self.value)


RUNNING_STATES = frozenset({WatcherState.STARTING, WatcherState.ACTIVE})
HALTED_STATES = frozenset({WatcherState.STOPPED, WatcherState.PAUSED, WatcherState.FAILED})

WATCHER_TRANSITIONS: dict[WatcherState, frozenset[WatcherState]] = {
    WatcherState.STOPPED: frozenset({WatcherState.STARTING}),
    WatcherState.STARTING: frozenset({WatcherState.ACTIVE, WatcherState.STOPPING}),
    WatcherState.ACTIVE: frozenset({WatcherState.STOPPING, WatcherState.STARTING}),
    WatcherState.STOPPING: frozenset(
        {WatcherState.STOPPED, WatcherState.PAUSED, WatcherState.FAILED}
    ),
    WatcherState.PAUSED: frozenset({WatcherState.STARTING, WatcherState.STOPPED}),
    WatcherState.FAILED: frozenset({WatcherState.STARTING, WatcherState.STOPPED}),
}


class WatcherResult(_Named):
    """Why a watcher is where it is; the first failure wins until the next explicit start."""

    SUCCESS = "success"
    FLAPPING = "flapping"
    EXEC_FAILED = "exec-failed"
    # A before_start/before_spawn/after_spawn/after_start hook said no (returned False or failed).
    HOOK_ABORTED = "hook-aborted"


class ProcessState(_Named):
    # Spawn asked of the spawner (or its before_spawn hook running); no pid yet.
    SPAWNING = "spawning"
    RUNNING = "running"
    # `stop_signal` sent; SIGKILL when `graceful_timeout` runs out.
    STOP_SIGNAL = "stop-signal"
    STOP_SIGKILL = "stop-sigkill"


LIVE_PROCESS_STATES = frozenset({ProcessState.SPAWNING, ProcessState.RUNNING})
STOPPING_PROCESS_STATES = frozenset({ProcessState.STOP_SIGNAL, ProcessState.STOP_SIGKILL})

PROCESS_TRANSITIONS: dict[ProcessState, frozenset[ProcessState]] = {
    ProcessState.SPAWNING: frozenset(
        {ProcessState.RUNNING, ProcessState.STOP_SIGNAL, ProcessState.STOP_SIGKILL}
    ),
    ProcessState.RUNNING: frozenset({ProcessState.STOP_SIGNAL, ProcessState.STOP_SIGKILL}),
    ProcessState.STOP_SIGNAL: frozenset({ProcessState.STOP_SIGKILL}),
    ProcessState.STOP_SIGKILL: frozenset(),
}


# -- what the watcher's state machine runs on -----------------------------------------------------


class WatcherPhase(_Named):
    """Where a watcher is, each wait named: the state its event table is keyed on."""

    STOPPED = "stopped"
    # Flapping: a RETRY timer will start it again (if still wanted up).
    PAUSED = "paused"
    # Given up (failed execs, flapping, a hook's no): stopped until told to start.
    FAILED = "failed"
    # The before_start hook runs: nothing is spawned until it approves.
    BEFORE_START = "before-start"
    # Spawning the workers, until each runs (and is ready, if it says so).
    STARTING = "starting"
    # Every worker runs: the after_start hook runs before the watcher is active.
    AFTER_START = "after-start"
    # after_start approved while a worker had gone missing: active once every worker runs again,
    # without asking the hook twice.
    START_APPROVED = "start-approved"
    ACTIVE = "active"
    # The before_stop hook runs: the processes are left alone until it returns.
    BEFORE_STOP = "before-stop"
    # Processes stopped (stop signal, SIGKILL after graceful_timeout); once none is left the
    # watcher rests where the stop was headed (stopped, paused or failed).
    STOPPING = "stopping"


HALTED_PHASES = frozenset({WatcherPhase.STOPPED, WatcherPhase.PAUSED, WatcherPhase.FAILED})
STARTING_PHASES = frozenset(
    {
        WatcherPhase.BEFORE_START,
        WatcherPhase.STARTING,
        WatcherPhase.AFTER_START,
        WatcherPhase.START_APPROVED,
    }
)
ACTIVE_PHASES = frozenset({WatcherPhase.ACTIVE})
STOPPING_PHASES = frozenset({WatcherPhase.BEFORE_STOP, WatcherPhase.STOPPING})
# Phases in which the watcher keeps its workers up (spawns, restarts, backoff, warmup).
RUNNING_PHASES = STARTING_PHASES | ACTIVE_PHASES

WATCHER_STATE_OF: dict[WatcherPhase, WatcherState] = {
    WatcherPhase.STOPPED: WatcherState.STOPPED,
    WatcherPhase.PAUSED: WatcherState.PAUSED,
    WatcherPhase.FAILED: WatcherState.FAILED,
    WatcherPhase.BEFORE_START: WatcherState.STARTING,
    WatcherPhase.STARTING: WatcherState.STARTING,
    WatcherPhase.AFTER_START: WatcherState.STARTING,
    WatcherPhase.START_APPROVED: WatcherState.STARTING,
    WatcherPhase.ACTIVE: WatcherState.ACTIVE,
    WatcherPhase.BEFORE_STOP: WatcherState.STOPPING,
    WatcherPhase.STOPPING: WatcherState.STOPPING,
}

# The steps the watcher takes, one at a time (a start of zero processes goes
# STOPPED -> STARTING -> ACTIVE); checked at each step, and against the histories in the tests.
_START = frozenset({WatcherPhase.BEFORE_START, WatcherPhase.STARTING})
_STOP = frozenset({WatcherPhase.BEFORE_STOP, WatcherPhase.STOPPING})
WATCHER_PHASE_TRANSITIONS: dict[WatcherPhase, frozenset[WatcherPhase]] = {
    WatcherPhase.STOPPED: _START,
    WatcherPhase.PAUSED: _START | {WatcherPhase.STOPPED},
    WatcherPhase.FAILED: _START | {WatcherPhase.STOPPED},
    # A refused before_start stops without the stop hooks: straight to STOPPING.
    WatcherPhase.BEFORE_START: _STOP | {WatcherPhase.STARTING},
    WatcherPhase.STARTING: _STOP | {WatcherPhase.AFTER_START, WatcherPhase.ACTIVE},
    WatcherPhase.AFTER_START: _STOP | {WatcherPhase.START_APPROVED},
    WatcherPhase.START_APPROVED: _STOP | {WatcherPhase.ACTIVE},
    WatcherPhase.ACTIVE: _STOP,
    WatcherPhase.BEFORE_STOP: frozenset({WatcherPhase.STOPPING}),
    WatcherPhase.STOPPING: HALTED_PHASES,
}


class SpawnGate(_Named):
    """What holds a running watcher's spawns back, each until its own timer (or for good).

    Not phases: a gate outlasts the start (a respawn while active warms up too), and the gates
    overlap each other and any running phase.
    """

    # warmup_delay since the last spawn is not over (WARMUP timer).
    WARMUP = "warmup"
    # Spawns were deferred (a shortage of resources, a lost spawner): SHORTAGE timer.
    SHORTAGE = "shortage"
    # The arbiter shuts down: nothing is spawned any more.
    SHUTDOWN = "shutdown"


class ProcessPhase(_Named):
    """Where one process of a watcher is, from its spawn request until it is reaped."""

    # Its before_spawn hook runs; no spawn asked yet.
    BEFORE_SPAWN = "before-spawn"
    # ... and a stop came meanwhile: dropped once the hook answers.
    BEFORE_SPAWN_CANCELLED = "before-spawn-cancelled"
    # Asked of the spawner; no pid yet.
    SPAWNING = "spawning"
    # ... and a stop came meanwhile: stopped as soon as its pid is known.
    SPAWNING_CANCELLED = "spawning-cancelled"
    # Exec'd its program; not ready (or readiness is not awaited: notify, ready_log_line).
    RUNNING = "running"
    # Said it is ready (READY=1, ready_log_line); its watchdog, if any, is armed.
    READY = "ready"
    # Stopped: stop signal sent, SIGKILL when graceful_timeout runs out; then SIGKILL sent.
    STOP_SIGNAL = "stop-signal"
    STOP_SIGKILL = "stop-sigkill"
    # Stopped for not becoming ready within ready_timeout: its exit is a failed start, and its
    # worker is not respawned before that exit.
    READY_TIMEOUT_SIGNAL = "ready-timeout-signal"
    READY_TIMEOUT_SIGKILL = "ready-timeout-sigkill"


# The exit code of a process that was not our child (adopted from a previous arbiter): its
# parent reaped it, and its status went there. Neither a status (>= 0) nor a signal (-1..-64).
EXIT_STATUS_UNKNOWN = -256

# No pid yet: only spawn answers and hook answers reach these.
UNBORN_PHASES = frozenset(
    {
        ProcessPhase.BEFORE_SPAWN,
        ProcessPhase.BEFORE_SPAWN_CANCELLED,
        ProcessPhase.SPAWNING,
        ProcessPhase.SPAWNING_CANCELLED,
    }
)
UP_PROCESS_PHASES = frozenset({ProcessPhase.RUNNING, ProcessPhase.READY})
PLAIN_STOP_PHASES = frozenset({ProcessPhase.STOP_SIGNAL, ProcessPhase.STOP_SIGKILL})
FAILED_START_PHASES = frozenset(
    {ProcessPhase.READY_TIMEOUT_SIGNAL, ProcessPhase.READY_TIMEOUT_SIGKILL}
)
STOP_PROCESS_PHASES = PLAIN_STOP_PHASES | FAILED_START_PHASES
WITH_PID_PHASES = UP_PROCESS_PHASES | STOP_PROCESS_PHASES
# A process in these holds its worker id: no other is spawned for it meanwhile. A plain stop
# does not (a replacement starts while the old process winds down); a failed start does (its
# worker restarts after the exit, with backoff).
HOLDS_WORKER_PHASES = UNBORN_PHASES | UP_PROCESS_PHASES | FAILED_START_PHASES

PROCESS_STATE_OF: dict[ProcessPhase, ProcessState] = {
    ProcessPhase.BEFORE_SPAWN: ProcessState.SPAWNING,
    ProcessPhase.BEFORE_SPAWN_CANCELLED: ProcessState.SPAWNING,
    ProcessPhase.SPAWNING: ProcessState.SPAWNING,
    ProcessPhase.SPAWNING_CANCELLED: ProcessState.SPAWNING,
    ProcessPhase.RUNNING: ProcessState.RUNNING,
    ProcessPhase.READY: ProcessState.RUNNING,
    ProcessPhase.STOP_SIGNAL: ProcessState.STOP_SIGNAL,
    ProcessPhase.STOP_SIGKILL: ProcessState.STOP_SIGKILL,
    ProcessPhase.READY_TIMEOUT_SIGNAL: ProcessState.STOP_SIGNAL,
    ProcessPhase.READY_TIMEOUT_SIGKILL: ProcessState.STOP_SIGKILL,
}

# A process is born in BEFORE_SPAWN or SPAWNING and leaves the table when reaped (or, unborn,
# when its spawn fails or its before_spawn hook drops it).
PROCESS_BIRTH_PHASES = frozenset({ProcessPhase.BEFORE_SPAWN, ProcessPhase.SPAWNING})
_SIGNALLED = frozenset({ProcessPhase.STOP_SIGNAL, ProcessPhase.STOP_SIGKILL})
PROCESS_PHASE_TRANSITIONS: dict[ProcessPhase, frozenset[ProcessPhase]] = {
    ProcessPhase.BEFORE_SPAWN: frozenset(
        {ProcessPhase.BEFORE_SPAWN_CANCELLED, ProcessPhase.SPAWNING}
    ),
    ProcessPhase.BEFORE_SPAWN_CANCELLED: frozenset(),
    ProcessPhase.SPAWNING: frozenset({ProcessPhase.SPAWNING_CANCELLED, ProcessPhase.RUNNING}),
    ProcessPhase.SPAWNING_CANCELLED: _SIGNALLED,
    ProcessPhase.RUNNING: _SIGNALLED | FAILED_START_PHASES | {ProcessPhase.READY},
    ProcessPhase.READY: _SIGNALLED,
    ProcessPhase.STOP_SIGNAL: frozenset({ProcessPhase.STOP_SIGKILL}),
    ProcessPhase.STOP_SIGKILL: frozenset(),
    ProcessPhase.READY_TIMEOUT_SIGNAL: frozenset({ProcessPhase.READY_TIMEOUT_SIGKILL}),
    ProcessPhase.READY_TIMEOUT_SIGKILL: frozenset(),
}
