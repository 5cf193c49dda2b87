"""A sink: a bounded byte queue filled by the loop and emptied by the sink's own writer thread.

The loop never waits on a sink: `put` only appends to a list and says whether there is still
room. What was put within HAND_OVER_DELAY goes to the writer thread as one hand-over (a C
`SimpleQueue`): a wakeup of the writer costs a thread switch and a trip through the GIL, so it
is paid per few reads, not per read (issue 18). Whatever blocks (a slow disk, a full one, a
journald that is gone) blocks the writer thread alone. A failed write is kept and retried with a
growing delay; while it fails the sink counts as full, so the readers apply backpressure at once
(see router.py), and what was queued is written when the sink works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from circus_sd.output.lines import Buffer
from circus_sd.signal_mask import handled_signals_blocked

log = logging.getLogger("circus_sd")

# A batch handed to a writer: as many queued chunks as there are, up to this many bytes.
MAX_BATCH_BYTES = 4 << 20
MAX_BATCH_CHUNKS = 512
# Chunks go over this long after the first of them, together (a sink of one busy 64 KiB pipe
# then gets a few reads per wakeup, not one: 1.97 -> 1.15 ms CPU/MB into a file per process,
# bench/output_streams.py), or at once when they add up to HAND_OVER_BYTES.
HAND_OVER_DELAY = 0.002
HAND_OVER_BYTES = 256 << 10
# Retries of a failing sink: the first after this delay, then doubling up to the maximum.
RETRY_FIRST = 0.1
RETRY_MAX = 2.0


@dataclasses.dataclass(frozen=True)
class Origin:
    """Which process and stream a chunk of lines comes from."""

    watcher: str
    wid: int
    pid: int
    stream: str  # "stdout" or "stderr"


class Chunk(NamedTuple):
    """Whole lines from one origin: `parts` joined, `size` bytes."""

    parts: list[Buffer]
    size: int
    origin: Origin


class SinkError(Exception):
    """A write failed after `written` bytes of the batch had been written; retry the rest."""

    def __init__(self, reason: str, written: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.written = written


class Writer(Protocol):
    """The blocking half of a sink: runs in the writer thread only."""

    @property
    def description(self) -> str: ...

    def write(self, batch: list[Chunk]) -> None:
        """Write all of `batch` or raise SinkError saying how much was written."""

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class SinkFailing:
    reason: str


@dataclasses.dataclass(frozen=True)
class SinkRecovered:
    seconds: float


@dataclasses.dataclass(frozen=True)
class SinkDropped:
    """Lines the sink itself threw away (at close while failing, or a writer's bug)."""

    reason: str
    # (lines, bytes) per origin
    counts: dict[Origin, tuple[int, int]]


SinkReport = SinkFailing | SinkRecovered | SinkDropped


def count_lines(parts: Iterable[Buffer]) -> int:
    return sum(bytes(part).count(b"\n") for part in parts)


def skip_bytes(batch: list[Chunk], count: int) -> list[Chunk]:
    """`batch` without its first `count` bytes (a partly written chunk keeps its tail)."""
    rest = list(batch)
    while rest and count >= rest[0].size:
        count -= rest.pop(0).size
    if rest and count:
        head = rest[0]
        joined = b"".join(head.parts)[count:]
        rest[0] = Chunk([joined], len(joined), head.origin)
    return rest


class Sink:
    """Lines from any number of readers, written in order of arrival by one thread."""

    def __init__(
        self,
        writer: Writer,
        loop: asyncio.AbstractEventLoop,
        limit: int,
        on_report: Callable[[Sink, SinkReport], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.writer = writer
        self.description = writer.description
        self.limit = limit
        self._low = limit // 2
        self._loop = loop
        self._on_report = on_report
        self._clock = clock
        self._queue: queue.SimpleQueue[list[Chunk] | None] = queue.SimpleQueue()
        # Put since the last hand-over, not yet with the writer thread (loop thread only).
        self._pending: list[Chunk] = []
        self._pending_bytes = 0
        # Each counter is written by one thread only, so their difference needs no lock.
        self._put_bytes = 0  # loop thread
        self._done_bytes = 0  # writer thread
        self._want_room = False
        self._failing = False  # written by the writer thread
        self._waiters: dict[object, Callable[[], None]] = {}
        self._closing = threading.Event()
        self._end_seen = False
        self.closed = False
        self._thread = threading.Thread(
            target=self._run, name=f"circus-sd sink: {self.description}", daemon=True
        )
        with handled_signals_blocked():
            self._thread.start()

    # -- the loop's side -------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Bytes handed over and not yet written (nor dropped)."""
        return self._put_bytes - self._done_bytes

    @property
    def full(self) -> bool:
        """No room: the queue is at its limit, or the writes fail."""
        return self._failing or self._put_bytes - self._done_bytes >= self.limit

    def put(self, parts: list[Buffer], size: int, origin: Origin) -> bool:
        """Queue whole lines; False once the sink is full (the caller should wait for room)."""
        self._put_bytes += size
        pending = self._pending
        if not pending:
            if HAND_OVER_DELAY:
                self._loop.call_later(HAND_OVER_DELAY, self._hand_over)
            else:
                self._loop.call_soon(self._hand_over)
        pending.append(Chunk(parts, size, origin))
        self._pending_bytes += size
        if self._pending_bytes >= HAND_OVER_BYTES:
            self._hand_over()
        return not self.full

    def _hand_over(self) -> None:
        """What was put since the last hand-over, to the writer thread in one piece."""
        if self._pending:
            self._queue.put(self._pending)
            self._pending = []
            self._pending_bytes = 0

    def when_room(self, key: object, callback: Callable[[], None]) -> None:
        """Call `callback` (once, on the loop) when the queue is down to half its limit."""
        self._waiters[key] = callback
        self._want_room = True
        # The writer may have drained the queue before it could see _want_room.
        if self.queued <= self._low and not self._failing:
            self._loop.call_soon(self._room)

    def forget(self, key: object) -> None:
        self._waiters.pop(key, None)

    def _room(self) -> None:
        if self.queued > self._low or self._failing or not self._want_room:
            return  # the writer calls again after its next batch
        self._want_room = False
        waiters, self._waiters = self._waiters, {}
        for callback in waiters.values():
            callback()

    def close(self) -> None:
        """Write what is queued, then end the thread (which gives up on a failing sink)."""
        if self.closed:
            return
        self.closed = True
        self._hand_over()
        self._closing.set()
        self._queue.put(None)

    async def wait_closed(self, timeout: float) -> bool:
        """After close(): True once the thread is done, False if it is still blocked."""
        deadline = self._clock() + timeout
        while self._thread.is_alive() and self._clock() < deadline:
            await asyncio.sleep(0.01)
        return not self._thread.is_alive()

    # -- the writer thread -----------------------------------------------------------------------

    def _report(self, report: SinkReport) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self._loop.call_soon_threadsafe(self._on_report, self, report)

    def _done(self, size: int) -> None:
        self._done_bytes += size
        if (
            self._want_room
            and not self._failing
            and self._put_bytes - self._done_bytes <= self._low
        ):
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._room)

    def _take(self) -> list[Chunk] | None:
        """The next batch, waiting for one; None once closed and everything is written."""
        if self._end_seen:
            return None
        batch = self._queue.get()
        if batch is None:
            self._end_seen = True
            return None
        size = sum(chunk.size for chunk in batch)
        while size < MAX_BATCH_BYTES and len(batch) < MAX_BATCH_CHUNKS:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                self._end_seen = True
                break
            batch += more
            size += sum(chunk.size for chunk in more)
        return batch

    def _run(self) -> None:
        held: list[Chunk] = []
        failing_since: float | None = None
        delay = RETRY_FIRST
        try:
            while True:
                if not held:
                    taken = self._take()
                    if taken is None:
                        break
                    held = taken
                try:
                    self.writer.write(held)
                except SinkError as error:
                    held = self._keep_unwritten(held, error.written)
                    if failing_since is None:
                        failing_since = self._clock()
                        self._failing = True
                        self._report(SinkFailing(error.reason))
                    if self._closing.wait(delay):
                        self._drop(held, f"closed while failing: {error.reason}")
                        held = []
                        self._drain_dropping(f"closed while failing: {error.reason}")
                        break
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                except Exception as error:  # a writer's bug must not kill the thread
                    log.exception("%s: write failed", self.description)
                    self._drop(held, f"write failed: {error!r}")
                    held = []
                    continue
                if failing_since is not None:
                    self._failing = False  # before _done, which may tell readers there is room
                    self._report(SinkRecovered(self._clock() - failing_since))
                    failing_since, delay = None, RETRY_FIRST
                self._done(sum(chunk.size for chunk in held))
                held = []
        finally:
            try:
                self.writer.close()
            except Exception:
                log.exception("%s: close failed", self.description)

    def _keep_unwritten(self, held: list[Chunk], written: int) -> list[Chunk]:
        if written <= 0:
            return held
        self._done(written)
        return skip_bytes(held, written)

    def _drop(self, chunks: list[Chunk], reason: str) -> None:
        if not chunks:
            return
        counts: dict[Origin, tuple[int, int]] = {}
        for chunk in chunks:
            lines, size = counts.get(chunk.origin, (0, 0))
            counts[chunk.origin] = (lines + count_lines(chunk.parts), size + chunk.size)
        self._done(sum(chunk.size for chunk in chunks))
        self._report(SinkDropped(reason, counts))

    def _drain_dropping(self, reason: str) -> None:
        rest: list[Chunk] = []
        while True:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is not None:
                rest += more
        self._drop(rest, reason)
