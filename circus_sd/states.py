"""Named states of watchers and processes, and the transitions allowed between them."""

from __future__ import annotations

import enum


class Want(enum.Enum):
    """What the operator asked for, kept apart from what is (runit's want vs state)."""

    UP = "up"
    DOWN = "down"


class WatcherState(enum.Enum):
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


class WatcherResult(enum.Enum):
    """Why a watcher is where it is; the first failure wins until the next explicit start."""

    SUCCESS = "success"
    FLAPPING = "flapping"
    EXEC_FAILED = "exec-failed"
    # A before_start/before_spawn/after_spawn/after_start hook said no (returned False or failed).
    HOOK_ABORTED = "hook-aborted"


class ProcessState(enum.Enum):
    # Spawn asked of the spawner; no pid yet.
    SPAWNING = "spawning"
    RUNNING = "running"
    # `stop_signal` sent; SIGKILL when `graceful_timeout` runs out.
    STOP_SIGNAL = "stop-signal"
    STOP_SIGKILL = "stop-sigkill"


LIVE_PROCESS_STATES = frozenset({ProcessState.SPAWNING, ProcessState.RUNNING})
STOPPING_PROCESS_STATES = frozenset({ProcessState.STOP_SIGNAL, ProcessState.STOP_SIGKILL})

PROCESS_TRANSITIONS: dict[ProcessState, frozenset[ProcessState]] = {
    ProcessState.SPAWNING: frozenset({ProcessState.RUNNING, ProcessState.STOP_SIGNAL}),
    ProcessState.RUNNING: frozenset({ProcessState.STOP_SIGNAL, ProcessState.STOP_SIGKILL}),
    ProcessState.STOP_SIGNAL: frozenset({ProcessState.STOP_SIGKILL}),
    ProcessState.STOP_SIGKILL: frozenset(),
}
