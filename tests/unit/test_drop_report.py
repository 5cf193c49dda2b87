"""Dropped lines reach events within a second and the log rarely, with exact sums."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from circus_sd.output.drops import LOG_EVERY, PUBLISH_EVERY, DropReport
from circus_sd.output.sink import Origin

WEB = Origin("web", 1, 10, "stdout")
WEB2 = Origin("web", 2, 11, "stdout")


class FakeTimers:
    """call_later on a fake clock; `advance` runs what is due, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pending: list[tuple[float, Callable[[], None], FakeTimers.Handle]] = []

    class Handle:
        def __init__(self) -> None:
            self.cancelled = False

        def cancel(self) -> None:
            self.cancelled = True

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimers.Handle:
        handle = FakeTimers.Handle()
        self.pending.append((self.now + delay, callback, handle))
        return handle

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            due = sorted((t for t in self.pending if t[0] <= end), key=lambda t: t[0])
            if not due:
                break
            when, callback, handle = due[0]
            self.pending.remove(due[0])
            self.now = when
            if not handle.cancelled:
                callback()
        self.now = end


@pytest.fixture
def setup() -> tuple[DropReport, FakeTimers, list[tuple[str, str, dict[str, Any]]]]:
    timers = FakeTimers()
    events: list[tuple[str, str, dict[str, Any]]] = []
    report = DropReport(
        lambda w, e, p: events.append((w, e, p)), timers.call_later, lambda: timers.now
    )
    return report, timers, events


def test_counts_are_summed_into_one_event_per_second(
    setup: tuple[DropReport, FakeTimers, list[tuple[str, str, dict[str, Any]]]],
) -> None:
    report, timers, events = setup
    report.add(WEB, "file /x", 3, 300, "backpressure")
    report.add(WEB2, "file /x", 2, 200, "backpressure")  # same watcher and stream: summed
    assert events == []
    timers.advance(PUBLISH_EVERY)
    assert events == [
        ("web", "dropped", {"stream": "stdout", "lines": 5, "bytes": 500, "sink": "file /x",
                            "reason": "backpressure"}),
    ]
    assert report.totals == {"web": [5, 500]}


def test_log_lines_are_rare_but_nothing_is_left_out(
    setup: tuple[DropReport, FakeTimers, list[tuple[str, str, dict[str, Any]]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    report, timers, events = setup
    caplog.set_level(logging.WARNING, "circus_sd")
    for _second in range(int(LOG_EVERY) + 5):
        report.add(WEB, "file /x", 1, 100, "backpressure")
        timers.advance(1.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "web: dropped 1 line(s) (100 bytes) of stdout for file /x (backpressure)"
    assert len(messages) == 2
    assert messages[1].startswith("web: dropped 30 line(s) (3000 bytes)")
    assert messages[1].endswith("in the last 30 s")
    report.flush()
    counts = [int(m.split()[2]) for m in [r.getMessage() for r in caplog.records]]
    assert sum(counts) == int(LOG_EVERY) + 5
    assert sum(p["lines"] for _w, _e, p in events) == int(LOG_EVERY) + 5
