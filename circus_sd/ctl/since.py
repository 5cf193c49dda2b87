"""`--since` times in journalctl's syntax (a subset of systemd.time(7)) to a Unix time (pure).

Accepted: `now`, `today`, `yesterday`; a span before now (`-1h`, `10 min ago`, `1h 30min ago`);
an ISO date with an optional time (`2026-12-02`, `2026-12-02 10:00`, `2026-12-02T10:00:05`),
in local time as journalctl reads it.
"""

from __future__ import annotations

import datetime
import re

# systemd.time(7)'s unit names, in seconds.
_UNITS: dict[str, float] = {}
for _names, _seconds in (
    (("us", "usec"), 1e-6),
    (("ms", "msec"), 1e-3),
    (("s", "sec", "secs", "second", "seconds"), 1.0),
    (("m", "min", "mins", "minute", "minutes"), 60.0),
    (("h", "hr", "hour", "hours"), 3600.0),
    (("d", "day", "days"), 86400.0),
    (("w", "week", "weeks"), 7 * 86400.0),
):
    for _name in _names:
        _UNITS[_name] = _seconds

_SPAN_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)")
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M",
                 "%Y-%m-%d")


class SinceError(ValueError):
    """A `--since` value this parser does not read."""


def parse_span(text: str) -> float:
    """`1h 30min` -> 5400.0; a bare number is seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    total, position = 0.0, 0
    while position < len(text):
        match = _SPAN_PART.match(text, position)
        if match is None or match.group(2) not in _UNITS:
            raise SinceError(f"not a time span: {text!r}")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position == 0:
        raise SinceError(f"not a time span: {text!r}")
    return total


def parse_since(text: str, now: float) -> float:
    """The Unix time `text` names, relative to `now` where it is relative."""
    raw = text.strip()
    lowered = raw.lower()
    midnight = datetime.datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0,
                                                            microsecond=0)
    if lowered == "now":
        return now
    if lowered == "today":
        return midnight.timestamp()
    if lowered == "yesterday":
        return (midnight - datetime.timedelta(days=1)).timestamp()
    try:
        if lowered.startswith("-"):
            return now - parse_span(lowered[1:])
        if lowered.endswith(" ago"):
            return now - parse_span(lowered[: -len(" ago")])
    except SinceError:
        raise SinceError(_expected(raw)) from None
    for date_format in _DATE_FORMATS:
        try:
            return datetime.datetime.strptime(raw, date_format).timestamp()
        except ValueError:
            continue
    raise SinceError(_expected(raw))


def _expected(raw: str) -> str:
    return (f"--since: expected a time such as -1h, '10 min ago', today or 2026-12-02 10:00, "
            f"got {raw!r}")
