"""A reader and a slow sink: the child waits first, lines are dropped after the timeout, then all
resumes by itself. Real pipe and loop, a sink whose writes the test holds back."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from circus_sd.output.lines import Buffer, LineAssembler
from circus_sd.output.reader import StreamReader, Tap
from circus_sd.output.sink import Chunk, Origin, Sink

ORIGIN = Origin("web", 1, 123, "stdout")
LINE = b"x" * 99 + b"\n"


class HeldWriter:
    description = "held"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.lines = 0

    def write(self, batch: list[Chunk]) -> None:
        self.gate.wait()
        self.lines += sum(b"".join(c.parts).count(b"\n") for c in batch)

    def close(self) -> None:
        pass


class Host:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.dropped_lines = 0
        self.events: list[str] = []
        self._taps: list[Tap] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def taps(self) -> list[Tap]:
        return self._taps

    def dropped(self, origin: Origin, sink: str, lines: int, size: int, reason: str) -> None:
        assert (origin, reason) == (ORIGIN, "backpressure")
        self.dropped_lines += lines

    def started_dropping(self, reader: StreamReader) -> None:
        self.events.append("dropping")

    def caught_up(self, reader: StreamReader) -> None:
        self.events.append("room")

    def reader_done(self, reader: StreamReader) -> None:
        self.events.append("done")


class Setup(NamedTuple):
    host: Host
    writer: HeldWriter
    sink: Sink
    read_fd: int
    write_fd: int


def reading(loop: asyncio.AbstractEventLoop, sink_limit: int, timeout: float) -> Setup:
    """A started reader on a real pipe (the loop holds it), into a sink whose writer the test
    holds back."""
    host = Host(loop)
    writer = HeldWriter()
    sink = Sink(writer, loop, sink_limit, lambda s, r: None)
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK)
    reader = StreamReader(host, read_fd, sink, LineAssembler(1000), ORIGIN, timeout)
    reader.start()
    return Setup(host, writer, sink, read_fd, write_fd)


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def pipe_with_room(read_fd: int, write_fd: int) -> Callable[[], bool]:
    """A non-blocking probe: can the child write another line without waiting?"""
    os.set_blocking(write_fd, False)

    def has_room() -> bool:
        try:
            os.write(write_fd, LINE)
        except BlockingIOError:
            return False
        return True

    return has_room


def test_the_child_waits_then_lines_are_dropped_then_all_resumes() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        host, writer, sink, read_fd, write_fd = reading(loop, 1000, 0.3)
        written = 0
        has_room = pipe_with_room(read_fd, write_fd)

        # The sink takes nothing: the reader stops reading and the pipe fills up.
        started = time.monotonic()
        while has_room():
            written += 1
            await asyncio.sleep(0)
        assert sink.full and host.dropped_lines == 0
        # ... until backpressure_timeout: then the pipe is read again, lines dropped.
        await until(lambda: host.events == ["dropping"])
        assert time.monotonic() - started >= 0.25
        while written < 20000:
            if has_room():
                written += 1
            else:
                await asyncio.sleep(0.001)
        await until(lambda: host.dropped_lines > 0)
        assert sink.queued < sink.limit + 2 * 65536, "memory stays bounded"

        # The sink works again: nothing more is dropped, and every line is accounted for.
        writer.gate.set()
        await until(lambda: "room" in host.events)
        dropped_before = host.dropped_lines
        for _ in range(100):
            while not has_room():
                await asyncio.sleep(0.001)
            written += 1
        os.close(write_fd)
        await until(lambda: "done" in host.events)
        sink.close()
        assert await sink.wait_closed(5)
        assert host.dropped_lines == dropped_before
        assert writer.lines + host.dropped_lines == written

    asyncio.run(scenario())


def test_a_sink_that_catches_up_in_time_loses_nothing() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        host, writer, sink, read_fd, write_fd = reading(loop, 1000, 10.0)
        seen: list[Buffer] = []
        host.taps.append(lambda origin, parts: seen.extend(parts))
        has_room = pipe_with_room(read_fd, write_fd)
        written = 0
        while has_room():
            written += 1
            await asyncio.sleep(0)
        loop.call_later(0.2, writer.gate.set)  # well within backpressure_timeout
        for _ in range(5000):
            while not has_room():
                await asyncio.sleep(0.001)
            written += 1
        os.close(write_fd)
        await until(lambda: "done" in host.events)
        sink.close()
        assert await sink.wait_closed(5)
        assert "dropping" not in host.events
        assert host.dropped_lines == 0 and writer.lines == written
        assert b"".join(bytes(p) for p in seen).count(b"\n") == written  # taps saw every line

    asyncio.run(scenario())


def test_a_failing_tap_costs_the_lines_nothing() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        host, writer, sink, _read_fd, write_fd = reading(loop, 1 << 20, 10.0)
        writer.gate.set()

        def broken(origin: Origin, parts: list[Buffer]) -> None:
            raise RuntimeError("a bug in a tap")

        seen: list[Buffer] = []
        host.taps.extend([broken, lambda origin, parts: seen.extend(parts)])
        for _ in range(100):
            os.write(write_fd, LINE)
            await asyncio.sleep(0)
        os.write(write_fd, b"last, without a newline")
        os.close(write_fd)
        await until(lambda: "done" in host.events)
        sink.close()
        assert await sink.wait_closed(5)
        assert writer.lines == 101  # the last line is completed at EOF
        assert b"".join(bytes(p) for p in seen).count(b"\n") == 101  # the next tap still ran

    asyncio.run(scenario())
