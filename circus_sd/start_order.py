"""The order watchers start in: highest priority first, but never before what they come `after`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from circus_sd.config.model import WatcherConfig


class DependencyError(ValueError):
    """An `after` naming an unknown watcher, or a cycle; `watcher` is where it shows."""

    def __init__(self, watcher: WatcherConfig, message: str) -> None:
        super().__init__(message)
        self.watcher = watcher


def by_priority(watchers: Iterable[WatcherConfig]) -> list[WatcherConfig]:
    """Circus's order: highest priority first, by name among equals (Circus sorts its watchers
    by name, then by priority)."""
    return sorted(sorted(watchers, key=lambda w: w.name), key=lambda w: -w.priority)


def start_order(watchers: Sequence[WatcherConfig]) -> list[WatcherConfig]:
    """A stable topological order: among the watchers whose `after` are all placed, the next
    in Circus's order (by_priority) goes next."""
    by_name = {w.name: w for w in watchers}
    for watcher in watchers:
        for name in watcher.after:
            if name not in by_name:
                raise DependencyError(watcher, f"after: no watcher named {name!r}")
            if name == watcher.name:
                raise DependencyError(watcher, "after: a watcher cannot come after itself")
    pending = by_priority(watchers)
    placed: list[WatcherConfig] = []
    done: set[str] = set()
    while pending:
        for index, watcher in enumerate(pending):
            if all(name in done for name in watcher.after):
                placed.append(pending.pop(index))
                done.add(watcher.name)
                break
        else:
            names = ", ".join(w.name for w in pending)
            raise DependencyError(pending[0], f"after: the watchers {names} wait for each other")
    return placed
