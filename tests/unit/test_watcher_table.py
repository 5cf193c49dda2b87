"""The watcher's dispatch tables: every (phase, event type) pair declared, and the scripted
histories of test_watcher and test_hook_gates take only the declared steps, every one of them."""

from __future__ import annotations

import enum
import importlib.util
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from circus_sd import watcher_events
from circus_sd.states import (
    ACTIVE_PHASES,
    FAILED_START_PHASES,
    HALTED_PHASES,
    PLAIN_STOP_PHASES,
    PROCESS_BIRTH_PHASES,
    PROCESS_PHASE_TRANSITIONS,
    PROCESS_STATE_OF,
    PROCESS_TRANSITIONS,
    STARTING_PHASES,
    STOPPING_PHASES,
    UNBORN_PHASES,
    UP_PROCESS_PHASES,
    WATCHER_PHASE_TRANSITIONS,
    WATCHER_STATE_OF,
    WATCHER_TRANSITIONS,
    ProcessPhase,
    ProcessState,
    WatcherPhase,
    WatcherState,
)
from circus_sd.watcher import PROCESS_TABLE, WATCHER_TABLE, Watcher
from circus_sd.watcher_events import (
    BeforeSpawnDone,
    Event,
    ProcessEvent,
    StartAsked,
    WatcherEvent,
    hook_event,
    timer_event,
)
from circus_sd.watcher_table import Ignored, Impossible, Table


def concrete_events(base: type[Event]) -> set[type[Event]]:
    """The event classes of watcher_events that are `base`s, found by reading the module."""
    return {
        cls
        for _name, cls in inspect.getmembers(watcher_events, inspect.isclass)
        if issubclass(cls, base) and cls.__module__ == watcher_events.__name__
        and not cls.__subclasses__()
    }


def undeclared(
    table: Table[Any, Any], phases: type[enum.Enum], events: set[type[Event]]
) -> list[str]:
    return [
        f"{phase.name} x {event.__name__}"
        for phase in phases
        for event in sorted(events, key=lambda e: e.__name__)
        if (phase, event) not in table.cells
    ]


def test_every_watcher_phase_and_event_pair_is_declared() -> None:
    events = concrete_events(WatcherEvent)
    assert len(events) >= 25
    assert undeclared(WATCHER_TABLE, WatcherPhase, events) == []
    assert {event for _phase, event in WATCHER_TABLE.cells} == events


def test_every_process_phase_and_event_pair_is_declared() -> None:
    events = concrete_events(ProcessEvent)
    assert len(events) >= 12
    assert undeclared(PROCESS_TABLE, ProcessPhase, events) == []
    assert {event for _phase, event in PROCESS_TABLE.cells} == events


def test_the_completeness_check_can_fail() -> None:
    trimmed = Table[WatcherPhase, Any]("trimmed")
    for (phase, event), cell in WATCHER_TABLE.cells.items():
        if (phase, event) != (WatcherPhase.PAUSED, StartAsked):
            trimmed.on(event, {phase}, cell)
    missing = undeclared(trimmed, WatcherPhase, concrete_events(WatcherEvent))
    assert missing == ["PAUSED x StartAsked"]
    with pytest.raises(ValueError, match="declared twice"):
        trimmed.on(StartAsked, {WatcherPhase.ACTIVE}, Ignored("again"))


def test_phase_groups_partition_the_phases() -> None:
    watcher_groups = [HALTED_PHASES, STARTING_PHASES, ACTIVE_PHASES, STOPPING_PHASES]
    assert sum(len(g) for g in watcher_groups) == len(WatcherPhase)
    assert frozenset().union(*watcher_groups) == set(WatcherPhase)
    process_groups = [UNBORN_PHASES, UP_PROCESS_PHASES, PLAIN_STOP_PHASES, FAILED_START_PHASES]
    assert sum(len(g) for g in process_groups) == len(ProcessPhase)
    assert frozenset().union(*process_groups) == set(ProcessPhase)


def test_each_phase_shows_as_a_public_state_and_its_steps_as_public_transitions() -> None:
    assert set(WATCHER_STATE_OF) == set(WatcherPhase) == set(WATCHER_PHASE_TRANSITIONS)
    assert set(WATCHER_STATE_OF.values()) == set(WatcherState)
    assert set(PROCESS_STATE_OF) == set(ProcessPhase) == set(PROCESS_PHASE_TRANSITIONS)
    assert set(PROCESS_STATE_OF.values()) == set(ProcessState)
    for before, afters in WATCHER_PHASE_TRANSITIONS.items():
        for after in afters:
            seen, then = WATCHER_STATE_OF[before], WATCHER_STATE_OF[after]
            assert seen is then or then in WATCHER_TRANSITIONS[seen], (before, after)
    for p_before, p_afters in PROCESS_PHASE_TRANSITIONS.items():
        for p_after in p_afters:
            p_seen, p_then = PROCESS_STATE_OF[p_before], PROCESS_STATE_OF[p_after]
            assert p_seen is p_then or p_then in PROCESS_TRANSITIONS[p_seen], (p_before, p_after)


def test_timer_keys_and_hook_tokens_come_back_as_the_same_events() -> None:
    for cls in concrete_events(watcher_events.TimerFired):
        fields = [3] * len(inspect.signature(cls).parameters)
        event = cls(*fields)
        assert timer_event(event.key) == event
    assert hook_event(("before_spawn", 7), False) == BeforeSpawnDone(7, False)
    for cls in concrete_events(watcher_events.HookDone):
        assert hook_event(cls(2, True).token, True) == cls(2, True)


# -- the histories ---------------------------------------------------------------------------------


class Recorder:
    """The observer: which cells were dispatched to, which steps were taken."""

    def __init__(self) -> None:
        self.impossible: list[str] = []
        self.steps: set[tuple[str, enum.Enum | None, enum.Enum]] = set()

    def dispatched(self, table: str, phase: enum.Enum, event: Event, cell: object) -> None:
        if isinstance(cell, Impossible):
            self.impossible.append(f"{table}: {phase.name} x {type(event).__name__}")

    def moved(self, table: str, before: enum.Enum | None, after: enum.Enum) -> None:
        self.steps.add((table, before, after))


def _load(name: str) -> ModuleType:
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"histories_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def histories() -> Iterator[tuple[str, Callable[[], None]]]:
    """Every scripted history (a test that plays a Harness or Gates), with each of its
    parameters."""
    for module in (_load("test_watcher"), _load("test_hook_gates")):
        for name, function in inspect.getmembers(module, inspect.isfunction):
            source = inspect.getsource(function)
            plays = "Harness(" in source or "Gates(" in source
            if not name.startswith("test_") or not plays:
                continue
            marks = [m for m in getattr(function, "pytestmark", []) if m.name == "parametrize"]
            if not marks:
                yield name, function
                continue
            (mark,) = marks
            for value in mark.args[1]:
                yield f"{name}[{value}]", lambda f=function, v=value: f(v)


@pytest.fixture(scope="module")
def recorded() -> Recorder:
    recorder = Recorder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Watcher, "observer", recorder)
        played = 0
        for _name, history in histories():
            history()
            played += 1
    assert played >= 40
    return recorder


def test_the_histories_never_reach_an_impossible_pair(recorded: Recorder) -> None:
    assert recorded.impossible == []


def test_the_histories_take_every_declared_watcher_step_and_no_other(recorded: Recorder) -> None:
    declared = {
        ("watcher", before, after)
        for before, afters in WATCHER_PHASE_TRANSITIONS.items()
        for after in afters
    }
    taken = {step for step in recorded.steps if step[0] == "watcher"}
    assert sorted(taken - declared, key=str) == []
    assert sorted(declared - taken, key=str) == []


def test_the_histories_take_every_declared_process_step_and_no_other(recorded: Recorder) -> None:
    declared: set[tuple[str, enum.Enum | None, enum.Enum]] = {
        ("process", before, after)
        for before, afters in PROCESS_PHASE_TRANSITIONS.items()
        for after in afters
    }
    declared |= {("process", None, phase) for phase in PROCESS_BIRTH_PHASES}
    taken = {step for step in recorded.steps if step[0] == "process"}
    assert sorted(taken - declared, key=str) == []
    assert sorted(declared - taken, key=str) == []
