"""A transition table `(phase, event type) -> handler`, where a pair that needs no handler says
why: ignored (it happens, and changes nothing) or impossible (the machine never lets it happen).

s6-supervise's `actions[state][event]`, with the reason in the cell instead of a no-op function.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from typing import Generic, TypeVar

from circus_sd.watcher_events import Event

P = TypeVar("P", bound=enum.Enum)
H = TypeVar("H")


@dataclasses.dataclass(frozen=True)
class Ignored:
    """The event can arrive in this phase and changes nothing (a late answer, a stale timer)."""

    why: str


@dataclasses.dataclass(frozen=True)
class Impossible:
    """The machine never lets this event arrive in this phase; ignored if it does, and reported
    to an observer (the tests fail on it)."""

    why: str


class Table(Generic[P, H]):
    """Rows are declared per event type and group of phases; a pair is declared once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cells: dict[tuple[P, type[Event]], H | Ignored | Impossible] = {}

    def on(
        self, event: type[Event], phases: Iterable[P], cell: H | Ignored | Impossible
    ) -> Table[P, H]:
        for phase in phases:
            if (phase, event) in self.cells:
                raise ValueError(f"{self.name}: ({phase}, {event.__name__}) declared twice")
            self.cells[(phase, event)] = cell
        return self

    def __getitem__(self, key: tuple[P, type[Event]]) -> H | Ignored | Impossible:
        return self.cells[key]
