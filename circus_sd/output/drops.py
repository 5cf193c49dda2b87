"""Dropped lines, summed up and reported without flooding: events each second, log lines rarely."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from circus_sd.output.sink import Origin

log = logging.getLogger("circus_sd")

# An event `watcher.<name>.dropped` at most this often (with the counts since the last one).
PUBLISH_EVERY = 1.0
# A log line per (watcher, stream, sink, reason) at most this often; the first one comes with the
# first event, the rest are sums over the interval.
LOG_EVERY = 30.0

Key = tuple[str, str, str, str]  # watcher, stream, sink description, reason
Publish = Callable[[str, str, dict[str, Any]], None]


class Timer(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], Timer]


class DropReport:
    """Counts of dropped lines and bytes on their way to events and log lines."""

    def __init__(
        self,
        publish: Publish,
        call_later: CallLater,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publish = publish
        self._call_later = call_later
        self._clock = clock
        self._unpublished: dict[Key, list[int]] = {}
        self._unlogged: dict[Key, list[int]] = {}
        self._logged_at: dict[Key, float] = {}
        self._publish_timer: Timer | None = None
        self._log_timer: Timer | None = None
        # Lines and bytes dropped per watcher since the start.
        self.totals: dict[str, list[int]] = {}

    def add(self, origin: Origin, sink: str, lines: int, size: int, reason: str) -> None:
        key = (origin.watcher, origin.stream, sink, reason)
        for table in (self._unpublished, self._unlogged):
            counts = table.setdefault(key, [0, 0])
            counts[0] += lines
            counts[1] += size
        totals = self.totals.setdefault(origin.watcher, [0, 0])
        totals[0] += lines
        totals[1] += size
        if self._publish_timer is None:
            self._publish_timer = self._call_later(PUBLISH_EVERY, self._publish_counts)
        if self._log_timer is None:
            self._log_timer = self._call_later(self._log_delay(), self._log_counts)

    def _log_delay(self) -> float:
        now = self._clock()
        due = min(self._logged_at.get(key, now - LOG_EVERY) + LOG_EVERY for key in self._unlogged)
        return max(PUBLISH_EVERY, due - now)

    def _publish_counts(self) -> None:
        self._publish_timer = None
        counts, self._unpublished = self._unpublished, {}
        for (watcher, stream, sink, reason), (lines, size) in counts.items():
            self._publish(
                watcher,
                "dropped",
                {"stream": stream, "lines": lines, "bytes": size, "sink": sink, "reason": reason},
            )

    def _log_counts(self, everything: bool = False) -> None:
        self._log_timer = None
        now = self._clock()
        for key, (lines, size) in list(self._unlogged.items()):
            last = self._logged_at.get(key)
            if not everything and last is not None and now - last < LOG_EVERY:
                continue
            watcher, stream, sink, reason = key
            since = "" if last is None else f" in the last {now - last:.0f} s"
            log.warning(
                "%s: dropped %d line(s) (%d bytes) of %s for %s (%s)%s",
                watcher, lines, size, stream, sink, reason, since,
            )
            del self._unlogged[key]
            self._logged_at[key] = now
        if self._unlogged and not everything:
            self._log_timer = self._call_later(self._log_delay(), self._log_counts)

    def flush(self) -> None:
        """Report everything now (at shutdown)."""
        for timer in (self._publish_timer, self._log_timer):
            if timer is not None:
                timer.cancel()
        self._publish_counts()
        self._log_counts(everything=True)
