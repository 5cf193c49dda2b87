"""`ready_log_line` searches: what of each line is searched, and the CPU budget that ends them."""

from __future__ import annotations

import re
import signal

import pytest

from circus_sd.output import ready_line
from circus_sd.output.ready_line import (
    RESUMES,
    SEARCHED_BYTES,
    CpuTimer,
    OutOfTime,
    ReadyLineSearch,
    searched_parts,
)
from circus_sd.output.sink import Origin

# 2^40 ways for `(a+)+` to split the `a`s before the `b` says no: hours of backtracking.
BACKTRACKER = r"^(a+)+$"
HOURS_OF_WORK = b"a" * 40 + b"b\n"


def origin(pid: int) -> Origin:
    return Origin("web", 1, pid, "stdout")


def test_each_line_is_searched_up_to_the_bound_and_split_at_carriage_returns() -> None:
    long_line = b"x" * (SEARCHED_BYTES + 10) + b"ready\n"
    block = b"one\r\ntwo\rthree\n\n" + long_line
    assert list(searched_parts([block, memoryview(b"four\n")])) == [
        b"one", b"two", b"three", b"", b"x" * SEARCHED_BYTES, b"four",
    ]


def test_a_line_matches_only_within_its_searched_bytes() -> None:
    search = ReadyLineSearch()
    near = b"x" * (SEARCHED_BYTES - 5) + b"ready\n"
    far = b"x" * SEARCHED_BYTES + b"ready\n"
    assert not search.search(origin(10), "ready", [far])
    assert search.search(origin(10), "ready", [b"starting\n", near])


def test_a_backtracking_pattern_costs_at_most_the_budget_then_nothing_is_searched() -> None:
    search = ReadyLineSearch(budget=0.05)
    assert not search.search(origin(10), BACKTRACKER, [HOURS_OF_WORK])
    # Spent: later lines of that process are not searched, even one that would match.
    assert not search.search(origin(10), BACKTRACKER, [b"aaaa\n"])
    # Another process has its own budget.
    assert search.search(origin(11), BACKTRACKER, [b"aaaa\n"])
    # A new process with a reused pid too, once the old one is forgotten.
    search.forget(10)
    assert search.search(origin(10), BACKTRACKER, [b"aaaa\n"])


def test_the_cpu_timer_is_left_disarmed_and_a_late_signal_is_harmless() -> None:
    search = ReadyLineSearch(budget=0.05)
    search.search(origin(10), BACKTRACKER, [HOURS_OF_WORK])
    search.search(origin(11), "ready", [b"ready\n"])
    assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)
    # A SIGVTALRM still in flight when a search ends does not end the arbiter (nor raise).
    signal.raise_signal(signal.SIGVTALRM)


# -- interruptions while other threads use the CPU (the timer counts every thread's) ------------


class FakeClock:
    """The searching thread's CPU time, advanced only by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTimer(CpuTimer):
    """Records the time each search is armed with; fires nothing itself."""

    def __init__(self) -> None:
        super().__init__()
        self.armed: list[float] = []

    def usable(self) -> bool:
        return True

    def arm(self, seconds: float) -> None:
        self.armed.append(seconds)

    def disarm(self) -> None:
        pass


class InterruptedPattern:
    """A compiled pattern whose searches the timer's signal interrupts as scheduled: at the
    calls numbered in `interrupted` (from 0), after `own` seconds of the searching thread's CPU
    (the rest of the timer's time went to other threads)."""

    def __init__(self, expression: str, clock: FakeClock, interrupted: set[int], own: float):
        self.pattern = re.compile(expression.encode())
        self.clock = clock
        self.interrupted = interrupted
        self.own = own
        self.searched: list[bytes] = []

    def search(self, part: bytes) -> re.Match[bytes] | None:
        call = len(self.searched)
        self.searched.append(part)
        if call in self.interrupted:
            self.clock.now += self.own
            raise OutOfTime
        return self.pattern.search(part)


def preempted_search(
    monkeypatch: pytest.MonkeyPatch, interrupted: set[int], own: float, budget: float = 0.5
) -> tuple[ReadyLineSearch, FakeTimer, InterruptedPattern]:
    clock, timer = FakeClock(), FakeTimer()
    pattern = InterruptedPattern("ready", clock, interrupted, own)
    monkeypatch.setattr(ready_line, "line_pattern", lambda expression: pattern)
    return ReadyLineSearch(budget=budget, timer=timer, clock=clock), timer, pattern


def test_a_search_interrupted_before_its_own_budget_resumes_where_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    search, timer, pattern = preempted_search(monkeypatch, interrupted={1, 2}, own=0.1)
    assert search.search(origin(10), "ready", [b"one\ntwo\nready\n"])
    # "two" interrupted twice, searched again each time; "one" not searched again.
    assert pattern.searched == [b"one", b"two", b"two", b"two", b"ready"]
    # Re-armed each time with what is left of the budget.
    assert timer.armed == pytest.approx([0.5, 0.4, 0.3])
    # The CPU spent counts towards the process's budget: 0.3 s left.
    assert search.search(origin(10), "ready", [b"ready\n"])
    assert timer.armed[-1] == pytest.approx(0.3)


def test_interruptions_are_resumed_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every search interrupted at once (other threads take all the timer's time).
    search, timer, pattern = preempted_search(monkeypatch, interrupted=set(range(100)), own=0.0)
    assert not search.search(origin(10), "ready", [b"ready\n"])
    assert len(timer.armed) == RESUMES + 1
    assert timer.armed == pytest.approx([0.5] * (RESUMES + 1))
    # Given up: that process's output is not searched again.
    assert not search.search(origin(10), "ready", [b"ready\n"])
    assert len(pattern.searched) == RESUMES + 1


def test_an_interruption_once_its_own_budget_is_spent_is_not_resumed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    search, timer, pattern = preempted_search(monkeypatch, interrupted={0}, own=0.5)
    assert not search.search(origin(10), "ready", [b"ready\n"])
    assert timer.armed == [0.5]
    assert not search.search(origin(10), "ready", [b"ready\n"])
    assert pattern.searched == [b"ready"]
