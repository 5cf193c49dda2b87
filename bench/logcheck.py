"""Did the log lines land intact? bench-child writes 100-byte lines "<pid:7> <seq:10> x...x\\n"."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable

LINE_BYTES = 100
_LINE = re.compile(rb"^(\d{7}) (\d{10}) x{80}\n", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class LogCheck:
    expected_lines: int
    lines: int  # newline-terminated records found
    intact: int  # records that are exactly one whole line, each (pid, seq) once
    duplicates: int

    @property
    def torn(self) -> int:
        """Records that are not one whole line: torn apart, merged with another, or mangled."""
        return self.lines - self.intact - self.duplicates

    @property
    def missing(self) -> int:
        return self.expected_lines - self.intact

    @property
    def intact_bytes(self) -> int:
        return self.intact * LINE_BYTES


def check(path: str, expected_lines: int) -> LogCheck:
    with open(path, "rb") as f:
        data = f.read()
    seen: set[tuple[bytes, bytes]] = set()
    duplicates = 0
    for match in _LINE.finditer(data):
        key = (match.group(1), match.group(2))
        if key in seen:
            duplicates += 1
        seen.add(key)
    return LogCheck(expected_lines, data.count(b"\n"), len(seen), duplicates)


def merged(checks: list[LogCheck]) -> LogCheck:
    """The checks of several files (one per watcher) as one."""
    return LogCheck(
        sum(c.expected_lines for c in checks),
        sum(c.lines for c in checks),
        sum(c.intact for c in checks),
        sum(c.duplicates for c in checks),
    )


def wait_landed(path: str, expected_bytes: int, quiet: float, timeout: float) -> float:
    """Poll the file's size until it holds `expected_bytes` or stops growing for `quiet`
    seconds; returns the time.monotonic() of the last growth seen."""

    def size() -> int:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return 0

    return wait_settled(size, expected_bytes, quiet, timeout)


def wait_settled(measure: Callable[[], int], expected: int, quiet: float, timeout: float) -> float:
    """Poll `measure` (2 ms) until it reaches `expected` or stops growing for `quiet` seconds;
    returns the time.monotonic() of the last growth seen."""
    deadline = time.monotonic() + timeout
    value, changed = -1, time.monotonic()
    while True:
        now_value = measure()
        now = time.monotonic()
        if now_value != value:
            value, changed = now_value, now
        if value >= expected or now - changed > quiet or now > deadline:
            return changed
        time.sleep(0.002)
