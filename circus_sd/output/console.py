"""The arbiter's own stdout/stderr as a sink (StdoutStream, FancyStdoutStream, the default)."""

from __future__ import annotations

import os
import select
import stat
import zlib

from circus_sd.config.streams import COLORS
from circus_sd.output.lines import Buffer, LineStyle
from circus_sd.output.sink import Chunk, SinkError

_IOV_MAX = os.sysconf("SC_IOV_MAX")
_RESET = b"\033[0m"


def console_style(
    name: str, wid: int, time_format: str | None, fancy: bool, color: str | None
) -> LineStyle:
    """`[time ]name[wid] line`; fancy: coloured, `time name[wid] | line`, as Circus colours it."""
    if not fancy:
        return LineStyle(head=f"{name}[{wid}] ".encode(), time_format=time_format)
    # Without a colour, one per watcher that stays the same across restarts.
    index = COLORS.index(color) if color else zlib.crc32(name.encode()) % len(COLORS)
    return LineStyle(
        lead=f"\033[0;3{index + 1}m".encode(),
        head=f"{name}[{wid}] | ".encode(),
        tail=_RESET,
        time_format=time_format or "%Y-%m-%d %H:%M:%S",
    )


class ConsoleWriter:
    """Writes to one of the arbiter's fds; to a pipe or socket in pieces that stay atomic.

    The arbiter's own log lines go to the same stderr from another thread: in a pipe, a write
    of at most PIPE_BUF bytes is never interleaved with another, so each piece is whole lines.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.description = {1: "the arbiter's stdout", 2: "the arbiter's stderr"}.get(
            fd, f"fd {fd}"
        )
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            mode = 0
        self._piecewise = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)

    def write(self, batch: list[Chunk]) -> None:
        parts: list[Buffer] = [part for chunk in batch for part in chunk.parts]
        if self._piecewise:
            parts = list(_atomic_pieces(b"".join(parts), select.PIPE_BUF))
        written = 0
        index = 0
        while index < len(parts):
            group = parts[index : index + (1 if self._piecewise else _IOV_MAX)]
            try:
                count = os.writev(self.fd, group)
            except OSError as exc:
                raise SinkError(
                    f"cannot write to {self.description}: {exc.strerror}", written
                ) from None
            written += count
            for part in group:
                if count >= len(part):
                    count -= len(part)
                    index += 1
                else:
                    parts[index] = memoryview(part)[count:]
                    break

    def close(self) -> None:
        pass  # not ours to close


def _atomic_pieces(data: bytes, limit: int) -> list[bytes]:
    """`data` in pieces of whole lines of at most `limit` bytes (a longer line stays whole)."""
    pieces = []
    start = 0
    while len(data) - start > limit:
        cut = data.rfind(b"\n", start, start + limit) + 1
        if cut <= start:
            cut = data.find(b"\n", start + limit) + 1 or len(data)
        pieces.append(data[start:cut])
        start = cut
    if start < len(data):
        pieces.append(data[start:])
    return pieces
