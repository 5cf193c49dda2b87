"""What happens to a watcher, as typed events: commands, reports on its processes, hook answers
and timers. The watcher's public methods build these; its tables dispatch on their types.

Timer keys and hook tokens travel through the arbiter as plain tuples (`(KILL, spawn_id)`,
`(BEFORE_START, 3)`); `timer_event` and `hook_event` turn them back into events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping
from typing import ClassVar

from circus_sd.config.model import WatcherConfig

# Timer kinds (the first item of a timer key). A process's timers carry its spawn id, a
# worker's its wid.
KILL = "kill"  # graceful_timeout ran out: SIGKILL
MAX_AGE = "max_age"  # time to replace the process
HEALTHY = "healthy"  # the process outlived min_uptime: failure counters reset
RESTART = "restart"  # a worker's backoff is over
WARMUP = "warmup"  # warmup_delay since the last spawn is over
RETRY = "retry"  # a flapping pause is over
READY_TIMEOUT = "ready_timeout"  # a notify process did not send READY=1 in time
WATCHDOG = "watchdog"  # a notify process stopped sending WATCHDOG=1
SHORTAGE = "shortage"  # the wait after deferred spawns (a shortage, a lost spawner) is over

# Hooks the watcher waits for (tokens carry the start/stop number or the spawn id), and the
# after_stop notification.
BEFORE_START = "before_start"
AFTER_START = "after_start"
BEFORE_SPAWN = "before_spawn"
AFTER_SPAWN = "after_spawn"
BEFORE_STOP = "before_stop"
AFTER_STOP = "after_stop"


class Event:
    """Anything the watcher reacts to."""


class WatcherEvent(Event):
    """Dispatched on the watcher's phase."""


class ProcessEvent(Event):
    """Dispatched on the phase of the one process it concerns."""


# -- commands --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StartAsked(WatcherEvent):
    pass


@dataclasses.dataclass(frozen=True)
class StopAsked(WatcherEvent):
    pass


@dataclasses.dataclass(frozen=True)
class RestartAsked(WatcherEvent):
    pass


@dataclasses.dataclass(frozen=True)
class ReplaceAsked(WatcherEvent):
    """New processes for the running ones of `wids` (all if None)."""

    wids: frozenset[int] | None


@dataclasses.dataclass(frozen=True)
class KillAsked(WatcherEvent):
    """The `kill` command: `pid` (all if None) with `signum`, SIGKILL after `graceful_timeout`."""

    pid: int | None
    signum: int | None
    graceful_timeout: float | None


@dataclasses.dataclass(frozen=True)
class ConfigUpdated(WatcherEvent):
    """Options that apply without restarting processes (numprocesses, timeouts)."""

    config: WatcherConfig


@dataclasses.dataclass(frozen=True)
class ConfigReplaced(WatcherEvent):
    """A config that changes how processes are made: only while halted."""

    config: WatcherConfig


@dataclasses.dataclass(frozen=True)
class SpawnNoMore(WatcherEvent):
    """The arbiter shuts down: no spawn from now on."""


@dataclasses.dataclass(frozen=True)
class StopProcess(ProcessEvent):
    """The watcher's own decision to stop one process (a stop, a trim, a replacement...)."""

    signum: int | None = None
    timeout: float | None = None


# -- reports on processes --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SpawnedAll(WatcherEvent):
    """Processes (spawn id, pid) exec'd their program; settled once for all of them."""

    spawns: tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True)
class Spawned(ProcessEvent):
    """One of SpawnedAll's processes."""

    spawn_id: int
    pid: int


@dataclasses.dataclass(frozen=True)
class SpawnFailed(WatcherEvent, ProcessEvent):
    """The spawn never became a process. `code`: errno of a failure in the arbiter or the
    spawner (maybe a shortage); `spawner_lost`: the spawner was lost before it answered."""

    spawn_id: int
    reason: str
    code: int | None
    spawner_lost: bool


@dataclasses.dataclass(frozen=True)
class Exited(WatcherEvent, ProcessEvent):
    """Reaped: `exit_code`, or -signum; `exec_error` if it never became its program."""

    pid: int
    exit_code: int
    exec_error: str | None


@dataclasses.dataclass(frozen=True)
class Notified(WatcherEvent, ProcessEvent):
    """An sd_notify datagram from the process's own NOTIFY_SOCKET."""

    pid: int
    message: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class OutputMatched(WatcherEvent, ProcessEvent):
    """A line of the process's output matched `ready_log_line`."""

    pid: int


# -- hook answers ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HookDone(Event):
    """The answer of a hook the watcher waits for: `approved` is False when it returned False
    or failed (and its errors are not ignored)."""

    hook: ClassVar[str]
    key: int  # the start/stop number, or the spawn id
    approved: bool

    @property
    def token(self) -> tuple[str, int]:
        return (self.hook, self.key)


@dataclasses.dataclass(frozen=True)
class BeforeStartDone(HookDone, WatcherEvent):
    hook = BEFORE_START


@dataclasses.dataclass(frozen=True)
class AfterStartDone(HookDone, WatcherEvent):
    hook = AFTER_START


@dataclasses.dataclass(frozen=True)
class BeforeStopDone(HookDone, WatcherEvent):
    hook = BEFORE_STOP


@dataclasses.dataclass(frozen=True)
class BeforeSpawnDone(HookDone, WatcherEvent, ProcessEvent):
    hook = BEFORE_SPAWN


@dataclasses.dataclass(frozen=True)
class AfterSpawnDone(HookDone, WatcherEvent, ProcessEvent):
    hook = AFTER_SPAWN


def hook_event(token: Hashable, approved: bool) -> HookDone:
    """The event for the answer to a `CallHook` with `token`."""
    assert isinstance(token, tuple) and len(token) == 2, token
    kind, key = token
    return _HOOK_EVENTS[kind](key, approved)


_HOOK_EVENTS: dict[str, type[HookDone]] = {
    cls.hook: cls
    for cls in (BeforeStartDone, AfterStartDone, BeforeStopDone, BeforeSpawnDone, AfterSpawnDone)
}


# -- timers ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TimerFired(Event):
    kind: ClassVar[str]

    @property
    def key(self) -> tuple[object, ...]:
        """The key the timer is started and cancelled with: its kind, then its fields (spelled
        out by each class that has fields, not derived: several are made per spawn and exit)."""
        return (self.kind,)


@dataclasses.dataclass(frozen=True)
class ProcessTimerFired(TimerFired, WatcherEvent, ProcessEvent):
    """A timer of one process."""

    spawn_id: int

    @property
    def key(self) -> tuple[object, ...]:
        return (self.kind, self.spawn_id)


@dataclasses.dataclass(frozen=True)
class RestartDue(TimerFired, WatcherEvent):
    kind = RESTART
    wid: int

    @property
    def key(self) -> tuple[object, ...]:
        return (self.kind, self.wid)


@dataclasses.dataclass(frozen=True)
class WarmupOver(TimerFired, WatcherEvent):
    kind = WARMUP


@dataclasses.dataclass(frozen=True)
class ShortageWaitOver(TimerFired, WatcherEvent):
    kind = SHORTAGE


@dataclasses.dataclass(frozen=True)
class RetryDue(TimerFired, WatcherEvent):
    kind = RETRY


@dataclasses.dataclass(frozen=True)
class KillTimeout(ProcessTimerFired):
    kind = KILL


@dataclasses.dataclass(frozen=True)
class MaxAgeReached(ProcessTimerFired):
    kind = MAX_AGE


@dataclasses.dataclass(frozen=True)
class MinUptimeReached(ProcessTimerFired):
    kind = HEALTHY


@dataclasses.dataclass(frozen=True)
class ReadyTimeout(ProcessTimerFired):
    kind = READY_TIMEOUT


@dataclasses.dataclass(frozen=True)
class WatchdogTimeout(ProcessTimerFired):
    kind = WATCHDOG


def timer_event(key: Hashable) -> TimerFired:
    """The event for a timer started with `key`."""
    assert isinstance(key, tuple) and key, key
    kind, *args = key
    return _TIMER_EVENTS[kind](*args)


_TIMER_EVENTS: dict[str, type[TimerFired]] = {
    cls.kind: cls
    for cls in (
        RestartDue, WarmupOver, ShortageWaitOver, RetryDue, KillTimeout, MaxAgeReached,
        MinUptimeReached, ReadyTimeout, WatchdogTimeout,
    )
}
