"""One process's stdout or stderr in the event loop: reads, whole lines, and backpressure.

The policy, per reader: READING until the sink says it is full, then PAUSED (the pipe is not
read, so the child's writes wait) until the sink has room again; after `backpressure_timeout`
seconds of waiting, DROPPING: the pipe is read again and the lines the sink has no room for are
dropped and counted, until the sink has room. A busy pipe is also left alone for GATHER_DELAY
between reads (GATHERING), so that each read takes a big chunk; but not after a read that found
the pipe (nearly) full: its writer is already waiting, and waiting longer gains nothing. A pipe
found full is grown, if pipe_sizes.py allows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import logging
import os
import time
from collections.abc import Callable
from typing import Protocol

from circus_sd.output.lines import Buffer, LineAssembler
from circus_sd.output.pipe_sizes import PipeSizes
from circus_sd.output.sink import Origin, Sink, count_lines

READ_SIZE = 256 << 10
# A busy stream (read again within this delay, and not much there) is left alone this long, so
# that the next read takes a big chunk: 50-100x fewer reads, wakeups and hand-overs at full
# speed; output that comes now and then is still read at once.
GATHER_DELAY = 0.002
# A pipe that could not grow is tried again after this long (others may have shrunk by then).
GROW_RETRY = 1.0
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)

log = logging.getLogger("circus_sd")

Tap = Callable[[Origin, list[Buffer]], None]
_failed_taps: set[Tap] = set()


class ReaderHost(Protocol):
    """What a reader needs from whoever owns it (the router)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def taps(self) -> list[Tap]: ...

    def dropped(self, origin: Origin, sink: str, lines: int, size: int, reason: str) -> None: ...

    def started_dropping(self, reader: StreamReader) -> None: ...

    def caught_up(self, reader: StreamReader) -> None: ...

    def reader_done(self, reader: StreamReader) -> None: ...


class _State(enum.Enum):
    READING = "reading"
    GATHERING = "gathering"  # busy: letting the pipe fill a little before the next read
    PAUSED = "paused"  # the sink is full: the pipe is not read, the child's writes wait
    DROPPING = "dropping"  # paused too long: reading, and dropping lines the sink has no room for


class StreamReader:
    """One process's stdout or stderr: its pipe, its line assembler, its sink."""

    def __init__(
        self,
        host: ReaderHost,
        fd: int,
        sink: Sink,
        assembler: LineAssembler,
        origin: Origin,
        backpressure_timeout: float,
        pipes: PipeSizes | None = None,
    ) -> None:
        self.host = host
        self.fd = fd
        self.sink = sink
        self.assembler = assembler
        self.origin = origin
        self.backpressure_timeout = backpressure_timeout
        self.state = _State.READING
        self._timer: asyncio.TimerHandle | None = None
        self.read_bytes = 0
        self._last_read = 0.0
        # A read at least this big found the pipe about full: no gathering after it.
        self._full_read = READ_SIZE // 2
        self._pipes = pipes
        self.capacity = 0  # of the pipe; 0: not a pipe
        # A read at least this big found the pipe about full (3/4: a write of more than a page
        # leaves pages part empty): grow it, not before _grow_after.
        self._growth_read = 1 << 62
        self._grow_after = 0.0
        self.closed = False

    def start(self) -> None:
        with contextlib.suppress(OSError):  # not a pipe: capacity 0, as set, nothing to size
            self.capacity = fcntl.fcntl(self.fd, _F_GETPIPE_SZ)
        if self.capacity:
            self._sized()
            if self._pipes is not None:
                self._pipes.opened(self.capacity)
        self.host.loop.add_reader(self.fd, self.on_readable)

    def _sized(self) -> None:
        self._full_read = min(READ_SIZE, self.capacity) // 2
        if self._pipes is not None and self.capacity <= READ_SIZE:
            self._growth_read = self.capacity * 3 // 4
        else:
            self._growth_read = 1 << 62

    def _grow(self, now: float) -> None:
        if self._pipes is None or now < self._grow_after:
            return
        grown = self._pipes.grow(self.fd, self.capacity)
        if grown == self.capacity:
            self._grow_after = now + GROW_RETRY
            return
        self.capacity = grown
        self._sized()

    def on_readable(self) -> None:
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.finish()
            return
        self.read_bytes += len(data)
        lines = self.assembler.feed_plain(data)
        if lines:
            self._deliver(lines)
        now = time.monotonic()
        # Only while the sink keeps up: otherwise the sink, not the pipe, holds the writer back.
        if len(data) >= self._growth_read and self.state is _State.READING:
            self._grow(now)
        if (
            self.state is _State.READING
            and len(data) < self._full_read
            and now - self._last_read < GATHER_DELAY
        ):
            self._gather()
        self._last_read = now

    def _gather(self) -> None:
        loop = self.host.loop
        loop.remove_reader(self.fd)
        self.state = _State.GATHERING
        self._timer = loop.call_later(GATHER_DELAY, self._gathered)

    def _gathered(self) -> None:
        self._timer = None
        if self.state is _State.GATHERING:
            self.state = _State.READING
            self.host.loop.add_reader(self.fd, self.on_readable)

    def _deliver(self, lines: list[Buffer]) -> None:
        """Whole lines as the process wrote them: to the taps, then decorated to the sink."""
        if self.host.taps:
            self._tap(lines)
        assembler = self.assembler
        parts = lines if assembler.plain else assembler.decorate(lines, time.time())
        size = 0
        for part in parts:
            size += len(part)
        sink = self.sink
        if self.state is _State.DROPPING and sink.full:
            self.host.dropped(
                self.origin, sink.description, count_lines(parts), size, "backpressure"
            )
            return
        if not sink.put(parts, size, self.origin) and self.state is _State.READING:
            self._pause()

    def _tap(self, lines: list[Buffer]) -> None:
        for tap in self.host.taps:
            try:
                tap(self.origin, lines)
            except Exception:
                # A broken tap (a bug) must not cost the lines their sink; said once per tap.
                if tap not in _failed_taps:
                    _failed_taps.add(tap)
                    log.exception("output tap %r failed; its later failures are not logged", tap)

    def _pause(self) -> None:
        loop = self.host.loop
        loop.remove_reader(self.fd)
        self.state = _State.PAUSED
        self._timer = loop.call_later(self.backpressure_timeout, self._stop_waiting)
        self.sink.when_room(self, self._on_room)

    def _stop_waiting(self) -> None:
        self._timer = None
        if self.state is not _State.PAUSED:
            return
        self.state = _State.DROPPING
        self.host.loop.add_reader(self.fd, self.on_readable)
        self.host.started_dropping(self)

    def _on_room(self) -> None:
        if self.state is _State.PAUSED:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.host.loop.add_reader(self.fd, self.on_readable)
        self.state = _State.READING
        self.host.caught_up(self)

    def drain(self, reads: int = 64) -> None:
        """At shutdown: what the pipe still holds, whatever the sink's queue says."""
        for _ in range(reads):
            if self.closed:
                return
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                break
            parts = self.assembler.feed(data, time.time())
            if parts:
                self.sink.put(parts, sum(len(p) for p in parts), self.origin)
        self.finish()

    def carry(self) -> tuple[int, bytes]:
        """A re-execution: stop reading, keep the pipe open for the next program; its fd and
        the line begun."""
        self._detach()
        os.set_inheritable(self.fd, True)
        return self.fd, self.assembler.held()

    def _detach(self) -> None:
        """Off the loop and out of the sink; the fd itself is the caller's to close or keep."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.state in (_State.READING, _State.DROPPING):
            self.host.loop.remove_reader(self.fd)
        self.sink.forget(self)
        if self._pipes is not None and self.capacity:
            self._pipes.closed(self.capacity)

    def finish(self) -> None:
        """EOF (or shutdown): the last incomplete line goes out, the pipe is closed."""
        if self.closed:
            return
        self._detach()
        lines = self.assembler.flush_plain()
        if lines:
            self._tap(lines)
        parts = self.assembler.decorate(lines, time.time())
        if parts and not self.sink.closed:
            self.sink.put(parts, sum(len(p) for p in parts), self.origin)
        os.close(self.fd)
        self.host.reader_done(self)
