"""What one arbiter hands to the next across a re-execution (`circusctl reexec`, a crash).

The arbiter's process stays (same pid: its children stay its children, systemd's MAINPID holds),
its program is replaced. What the new program needs is written here, in one pickled
`Handover` in a memfd; the descriptors it names are inherited across execve. The watchers
travel as they are (pure state machines, no I/O); the I/O objects (pidfds, pipes, sockets)
travel as descriptor numbers with what is needed to rebuild them.

A new program may not understand an old handover: `HANDOVER_VERSION` says the format, and
`check` walks what was unpickled for dataclasses that miss declared fields (those with a
default take it) and watchers whose attributes differ from a fresh one's, so that a change of
shape is found by the pre-check (run as a separate process by the old arbiter), before the old
program is given up.
"""

from __future__ import annotations

import copyreg
import dataclasses
import io
import pickle
from collections.abc import Hashable, Iterator
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from circus_sd.config.model import Config
    from circus_sd.config.process_env import ChildDefaults

# Bumped whenever what a handover means changes, even if its shape does not.
HANDOVER_VERSION = 1


class HandoverError(Exception):
    """A handover that this program cannot use; says why."""

    def __init__(self, message: str, fds: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        # The descriptors it came with, when known: closed by whoever gives it up.
        self.fds = fds


@dataclasses.dataclass
class CarriedProcess:
    """A live child of a watcher (launcher's ProcessEntry, without its objects)."""

    pid: int
    watcher: str
    spawn_id: int
    pidfd: int
    started_wall: float
    phase: str  # process_table.ExecPhase value
    exit_code: int | None = None
    exec_error: str | None = None
    notify_fd: int | None = None
    notify_path: str | None = None


@dataclasses.dataclass
class CarriedPipe:
    """The read end of one process's stdout or stderr, and the line it had begun."""

    pid: int
    watcher: str
    wid: int
    stream: str
    fd: int
    held: bytes


@dataclasses.dataclass
class Handover:
    version: int
    code_version: str
    config: Config
    # Watcher objects by name, as they were (watcher.Watcher).
    watchers: dict[str, Any]
    # (watcher, timer key, deadline on CLOCK_MONOTONIC): timers keep their absolute deadlines.
    timers: list[tuple[str, Hashable, float]]
    processes: list[CarriedProcess]
    pipes: list[CarriedPipe]
    # [socket:NAME] sections' listening sockets, by name: fd, from systemd, file id.
    sockets: dict[str, tuple[int, bool, tuple[int, int] | None]]
    # Sockets systemd passed that no section uses yet, by name.
    unused_sockets: dict[str, int]
    # The control endpoints' lock files, held across the switch (path -> fd).
    endpoint_locks: dict[str, int]
    pidfile: tuple[str, int, int] | None  # path, fd, directory fd
    # The directory of the per-process sd_notify sockets, and how many were made.
    notify_directory: str | None
    notify_count: int
    # systemd's variables for us (NOTIFY_SOCKET, WATCHDOG_USEC), put back for the next program.
    systemd_env: dict[str, str]
    defaults: ChildDefaults
    started_at: float
    # Worker sessions of watchers without cgroups (leftovers.Leftovers), leader -> watcher.
    sessions: dict[int, str]
    # Cgroup leaves by pid, and the pids whose leaf is draining.
    leaves: dict[int, str]
    draining: list[int]
    dropped: dict[str, tuple[int, int]]
    # CLOCK_MONOTONIC times of the re-executions that followed a crash (the budget's record).
    crash_reexecs: list[float]
    generation: int
    reason: str
    # Requests (arbiter.Request values: stop, reload) that came during the switch.
    requests: list[str] = dataclasses.field(default_factory=list)

    def fds(self) -> list[int]:
        """Every descriptor the next program must inherit."""
        found = [p.pidfd for p in self.processes]
        found += [p.notify_fd for p in self.processes if p.notify_fd is not None]
        found += [p.fd for p in self.pipes]
        found += [fd for fd, _systemd, _file in self.sockets.values()]
        found += [*self.unused_sockets.values(), *self.endpoint_locks.values()]
        if self.pidfile is not None:
            found += list(self.pidfile[1:])
        return found


def _reduce_mapping_proxy(proxy: MappingProxyType[Any, Any]) -> tuple[Any, ...]:
    return read_only, (dict(proxy),)


def read_only(mapping: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    """A read-only mapping again (the type itself cannot be pickled by reference)."""
    return MappingProxyType(mapping)


def dump(handover: Handover) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    # The config's read-only mappings are MappingProxyType, which pickle refuses by default.
    pickler.dispatch_table = {**copyreg.dispatch_table, MappingProxyType: _reduce_mapping_proxy}
    pickler.dump(handover)
    return buffer.getvalue()


def load(data: bytes) -> Handover:
    """Unpickle and check a handover; HandoverError if this program cannot use it."""
    try:
        handover = pickle.loads(data)
    except Exception as exc:  # a class or module that is gone, a changed signature...
        raise HandoverError(f"cannot read the saved state: {type(exc).__name__}: {exc}") from None
    if not isinstance(handover, Handover):
        raise HandoverError("the saved state is not a circus-sd handover")
    if handover.version != HANDOVER_VERSION:
        raise HandoverError(
            f"saved state version {handover.version} (circus-sd {handover.code_version}); "
            f"this circus-sd reads version {HANDOVER_VERSION}"
        )
    check(handover)
    return handover


def check(handover: Handover) -> None:
    """Raise HandoverError if what was unpickled does not have the shape this code expects."""
    from circus_sd.watcher import Watcher

    for name, watcher in handover.watchers.items():
        if not isinstance(watcher, Watcher):
            raise HandoverError(f"watcher {name!r}: not a Watcher")
        expected = set(vars(Watcher(watcher.config)))
        found = set(vars(watcher))
        if expected != found:
            missing = ", ".join(sorted(expected - found)) or "-"
            extra = ", ".join(sorted(found - expected)) or "-"
            raise HandoverError(
                f"watcher {name!r}: its state has another shape here "
                f"(missing: {missing}; unknown: {extra})"
            )
    for thing in _walk(handover, set()):
        if dataclasses.is_dataclass(thing) and not isinstance(thing, type):
            # Its own attributes: a field with a default would be found on the class.
            own = vars(thing) if hasattr(thing, "__dict__") else None
            absent = [
                f for f in dataclasses.fields(thing)
                if (f.name not in own if own is not None else not hasattr(thing, f.name))
            ]
            # A field this code added with a default (a new option, most often) takes it, as
            # in a file that does not set it; one without a default cannot be made up.
            unfilled = [f.name for f in absent if not _fill_default(thing, f)]
            if unfilled:
                raise HandoverError(
                    f"{type(thing).__name__}: no {', '.join(unfilled)} in the saved state"
                )


def _fill_default(thing: Any, field: dataclasses.Field[Any]) -> bool:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return False
    object.__setattr__(thing, field.name, value)  # frozen ones too: it is being built
    return True


def _walk(thing: Any, seen: set[int]) -> Iterator[Any]:
    """Every object reachable from `thing` through containers, dataclasses and our objects."""
    if id(thing) in seen or isinstance(thing, (str, bytes, int, float, bool, type(None))):
        return
    seen.add(id(thing))
    yield thing
    if isinstance(thing, (list, tuple, set, frozenset)):
        children: Any = thing
    elif isinstance(thing, (dict, MappingProxyType)):
        children = [*thing.keys(), *thing.values()]
    elif dataclasses.is_dataclass(thing):
        children = [getattr(thing, f.name, None) for f in dataclasses.fields(thing)]
    elif type(thing).__module__.startswith("circus_sd.") and hasattr(thing, "__dict__"):
        children = list(vars(thing).values())
    else:
        return
    for child in children:
        yield from _walk(child, seen)
