"""From the bytes a process writes to complete, decorated lines: one assembler per pipe.

Pure (no I/O, the clock is an argument) and built for throughput: a read of 256 KiB of short
lines costs a handful of C-level scans (`rfind`, `find`), not a Python step per line. Lines come
out as a list of buffers (a memoryview of the read where no copy is needed) that together hold
only whole lines, each ending in b"\\n".
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable

# What ends each piece of a line cut because it was longer than `max_line`.
SPLIT_MARKER = b" [continues]"

Buffer = bytes | memoryview


@dataclasses.dataclass(frozen=True)
class LineStyle:
    """How each line is decorated: `lead[time ]head` before it, `tail` after (before b"\\n")."""

    head: bytes = b""
    tail: bytes = b""
    time_format: str | None = None
    lead: bytes = b""

    @property
    def plain(self) -> bool:
        return not (self.lead or self.head or self.tail or self.time_format)


class Prefixer:
    """Builds the text put before each line; the time part is cached per second when it can."""

    def __init__(self, style: LineStyle) -> None:
        self.style = style
        fmt = style.time_format
        # A format with sub-second fields cannot be cached per second.
        self._cacheable = fmt is None or "%f" not in fmt
        self._second = -1
        self._prefix = style.lead + style.head

    def __call__(self, now: float) -> bytes:
        fmt = self.style.time_format
        if fmt is None:
            return self._prefix
        second = int(now)
        if not self._cacheable or second != self._second:
            stamp = datetime.datetime.fromtimestamp(now).strftime(fmt).encode(errors="replace")
            self._prefix = self.style.lead + stamp + b" " + self.style.head
            self._second = second
        return self._prefix


class LineAssembler:
    """Complete lines of one process's stream, each at most `max_line` bytes (without b"\\n")."""

    def __init__(self, max_line: int, style: LineStyle | None = None) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self.max_line = max_line
        self.style = style or LineStyle()
        self._prefix: Callable[[float], bytes] | None = (
            None if self.style.plain else Prefixer(self.style)
        )
        # The start of a line not yet complete (<= max_line bytes), as the reads that brought
        # it: joined once, when the line ends or outgrows max_line, so that a line arriving in
        # many small reads costs a copy of each byte, not one of everything held at each read.
        self._held: list[bytes] = []
        self._held_size = 0
        # Lines with no b"\n" in a window this wide may be too long: look closer then.
        self._window = max(1, (max_line + 1) // 2)
        self.split_lines = 0  # lines that had to be cut

    @property
    def plain(self) -> bool:
        """Lines go out exactly as the process wrote them (no decoration)."""
        return self._prefix is None

    @property
    def pending(self) -> int:
        """Bytes of an incomplete last line held back."""
        return self._held_size

    def held(self) -> bytes:
        """The incomplete line held so far (a copy; still held)."""
        return b"".join(self._held)

    def hold(self, data: bytes) -> None:
        """Begin with `data` as the start of the next line (what a previous reader held)."""
        self._hold(data)

    def feed(self, data: bytes, now: float = 0.0) -> list[Buffer]:
        """Take what was read; return the lines it completes (maybe none), decorated."""
        return self.decorate(self.feed_plain(data), now)

    def feed_plain(self, data: bytes) -> list[Buffer]:
        """Take what was read; return the lines it completes as the process wrote them."""
        end = data.rfind(b"\n") + 1
        if not end:
            self._hold(data)
            if self._held_size <= self.max_line:
                return []
            # A line longer than max_line with no end in sight: give out its full pieces now.
            pieces, rest = self._cut(self._take_held())
            self._hold(rest)
            return [pieces]
        pending = self._take_held()
        first_end = data.find(b"\n")
        if len(pending) + first_end > self.max_line or self._may_hold_long_line(
            data, first_end + 1, end
        ):
            lines = self._split_long_lines(pending + data[:end])
        else:
            view = memoryview(data)
            lines = [pending, view[:end]] if pending else [data if end == len(data) else view[:end]]
        rest = data[end:]
        if len(rest) > self.max_line:
            pieces, rest = self._cut(rest)
            lines.append(pieces)
        self._hold(rest)
        return [part for part in lines if len(part)]

    def flush(self, now: float = 0.0) -> list[Buffer]:
        """At EOF: the incomplete last line, ended with a plain b"\\n"; then nothing is held."""
        return self.decorate(self.flush_plain(), now)

    def flush_plain(self) -> list[Buffer]:
        """`flush`, undecorated."""
        if not self._held_size:
            return []
        self._held.append(b"\n")
        return [self._take_held()]

    def _hold(self, data: bytes) -> None:
        if data:
            self._held.append(data)
            self._held_size += len(data)

    def _take_held(self) -> bytes:
        """The incomplete line held so far, in one piece (one copy); nothing is held after."""
        held = self._held
        text = held[0] if len(held) == 1 else b"".join(held)
        self._held = []
        self._held_size = 0
        return text

    # -- long lines ------------------------------------------------------------------------------

    def _may_hold_long_line(self, data: bytes, start: int, end: int) -> bool:
        """Could data[start:end] (whole lines) hold a line over max_line? False is certain.

        A line longer than max_line covers a whole window of `window` bytes aligned on
        `start + k * window`, and that window holds no b"\\n": one `find` per window.
        """
        window = self._window
        for left in range(start, end - window + 1, window):
            if data.find(b"\n", left, left + window) < 0:
                return True
        return False

    def _split_long_lines(self, text: bytes) -> list[Buffer]:
        """`text` (whole lines) with each line over max_line cut into marked pieces."""
        out: list[bytes] = []
        for line in text[:-1].split(b"\n"):
            if len(line) <= self.max_line:
                out.append(line + b"\n")
            else:
                pieces, last = self._cut(line)
                out.append(pieces + last + b"\n")
        return [b"".join(out)]

    def _cut(self, line: bytes) -> tuple[bytes, bytes]:
        """Pieces of max_line bytes, each ended by the marker, and the rest (<= max_line).

        Cuts avoid splitting a UTF-8 character.
        """
        limit = self.max_line
        pieces: list[bytes] = []
        start = 0
        while len(line) - start > limit:
            cut = start + limit
            # Back off (at most 3 bytes) from the middle of a multi-byte UTF-8 character.
            for back in range(4):
                if cut - back > start and line[cut - back] & 0xC0 != 0x80:
                    cut -= back
                    break
            pieces.append(line[start:cut] + SPLIT_MARKER + b"\n")
            start = cut
        if pieces:
            self.split_lines += 1
        return b"".join(pieces), line[start:]

    # -- decoration ------------------------------------------------------------------------------

    def decorate(self, lines: list[Buffer], now: float) -> list[Buffer]:
        """Whole lines from `feed_plain` with this stream's prefix and suffix on each line."""
        if self._prefix is None or not lines:
            return lines
        head = self._prefix(now)
        tail = self.style.tail
        text = b"".join(lines)
        # One C-level replace for the whole block: every line gets tail, b"\n", head.
        return [head + text[:-1].replace(b"\n", tail + b"\n" + head) + tail + b"\n"]
