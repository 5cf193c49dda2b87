"""What a configuration reload does, in order: a pure function of the old and new configuration
(and of what the sockets and the operator decided), executed step by step by the arbiter."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Sequence

from circus_sd.config.model import Config, WatcherConfig
from circus_sd.sockets import SocketChanges
from circus_sd.start_order import by_priority


@dataclasses.dataclass(frozen=True)
class RemoveWatcher:
    """Gone from the file: stopped, then forgotten."""

    name: str


@dataclasses.dataclass(frozen=True)
class StopForSocket:
    """A socket it uses is bound again or closed: the old socket must let go of its address
    before the new one binds, so the watcher stops first."""

    name: str


@dataclasses.dataclass(frozen=True)
class RebindSocket:
    name: str


@dataclasses.dataclass(frozen=True)
class CloseSocket:
    name: str


@dataclasses.dataclass(frozen=True)
class ChangeWatcher:
    """Its section changed: applied live, or by a restart (the arbiter decides per option)."""

    config: WatcherConfig


@dataclasses.dataclass(frozen=True)
class StartAfterSocket:
    name: str


@dataclasses.dataclass(frozen=True)
class AddWatcher:
    config: WatcherConfig
    start: bool


Step = (
    RemoveWatcher
    | StopForSocket
    | RebindSocket
    | CloseSocket
    | ChangeWatcher
    | StartAfterSocket
    | AddWatcher
)


def sockets_of(config: WatcherConfig, all_sockets: Iterable[str]) -> set[str]:
    """The sockets a watcher's processes get."""
    names = set(config.listen_fds)
    if config.stdin_socket is not None:
        names.add(config.stdin_socket)
    if config.use_sockets:
        names.update(all_sockets)
    return names


def plan(
    old: Config,
    new: Config,
    sockets: SocketChanges,
    wanted_up: Collection[str],
    running: Collection[str] | None = None,
) -> list[Step]:
    """The steps from `old` to `new`. `sockets`: the open sockets that change or go (new ones
    are bound before, all or none); `wanted_up`: the watchers the operator wants running (only
    those are restarted for a socket); `running`: the watchers the arbiter has (all of `old`'s
    if None; one removed by a command since is not removed again)."""
    before = {w.name: w for w in old.watchers}
    after = {w.name: w for w in new.watchers}
    present = set(before) if running is None else set(running)
    steps: list[Step] = []
    removed = [c for n, c in before.items() if n not in after and n in present]
    steps += [RemoveWatcher(c.name) for c in reversed(by_priority(removed))]
    moved = set(sockets.changed) | set(sockets.removed)
    old_sockets: Sequence[str] = [s.name for s in old.sockets]
    users = [
        name
        for name, config in after.items()
        if name in before
        and name in wanted_up
        and moved & (sockets_of(before[name], old_sockets) | sockets_of(config, old_sockets))
    ]
    steps += [StopForSocket(name) for name in users]
    steps += [RebindSocket(name) for name in sockets.changed]
    steps += [CloseSocket(name) for name in sockets.removed]
    steps += [
        ChangeWatcher(config)
        for name, config in after.items()
        if name in before and before[name] != config
    ]
    steps += [StartAfterSocket(name) for name in users]
    # In file order, as at start-up; the arbiter starts them by priority once all are added.
    steps += [AddWatcher(c, c.autostart) for n, c in after.items() if n not in before]
    return steps
