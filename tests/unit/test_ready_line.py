"""`ready_log_line` searches: what of each line is searched, and the CPU budget that ends them."""

from __future__ import annotations

import signal

from circus_sd.output.ready_line import SEARCHED_BYTES, ReadyLineSearch, searched_parts
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
