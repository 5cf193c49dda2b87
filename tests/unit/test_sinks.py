"""Sinks without a daemon: file writers (rotation, reopen, failures) and the queue + thread."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from circus_sd.output.console import _atomic_pieces
from circus_sd.output.files import FileWriter, SizeRotation, TimeRotation
from circus_sd.output.sink import (
    HAND_OVER_BYTES,
    Chunk,
    Origin,
    Sink,
    SinkDropped,
    SinkError,
    SinkFailing,
    SinkRecovered,
    SinkReport,
    skip_bytes,
)

ORIGIN = Origin("web", 1, 100, "stdout")


def chunk(data: bytes) -> Chunk:
    return Chunk([data], len(data), ORIGIN)


def numbered(start: int, count: int, width: int = 20) -> bytes:
    return b"".join(b"%0*d\n" % (width - 1, i) for i in range(start, start + count))


# -- files ---------------------------------------------------------------------------------------


def test_appends_whole_batches(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.write_bytes(b"before\n")
    writer = FileWriter(str(path))
    writer.write([chunk(b"a\n"), Chunk([b"b\n", memoryview(b"c\nzz")[:2]], 4, ORIGIN)])
    writer.close()
    assert path.read_bytes() == b"before\na\nb\nc\n"


def test_size_rotation_keeps_whole_lines_and_backup_count(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    writer = FileWriter(str(path), SizeRotation(max_bytes=100, backup_count=2))
    data = numbered(0, 23)  # 460 bytes of 20-byte lines
    writer.write([chunk(data[:150]), chunk(data[150:])])
    writer.close()
    files = [path, Path(f"{path}.1"), Path(f"{path}.2")]
    assert not Path(f"{path}.3").exists()
    for file in files:
        content = file.read_bytes()
        assert len(content) <= 100 and content.endswith(b"\n")
    # The newest lines survive, in order, across the files.
    kept = b"".join(f.read_bytes() for f in reversed(files))
    assert data.endswith(kept)
    assert len(path.read_bytes()) == 60  # 460 = 4 * 100 + 60


def test_a_line_longer_than_max_bytes_gets_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    writer = FileWriter(str(path), SizeRotation(max_bytes=10, backup_count=3))
    writer.write([chunk(b"short\n" + b"L" * 30 + b"\nend\n")])
    writer.close()
    assert Path(f"{path}.2").read_bytes() == b"short\n"
    assert Path(f"{path}.1").read_bytes() == b"L" * 30 + b"\n"
    assert path.read_bytes() == b"end\n"


def test_time_rotation_names_files_after_their_interval(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    now = [1_700_000_000.2]
    writer = FileWriter(
        str(path), TimeRotation("S", 1, backup_count=2, utc=True), clock=lambda: now[0]
    )
    for second in range(4):
        now[0] = 1_700_000_000.2 + second
        writer.write([chunk(b"second %d\n" % second)])
    writer.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(1_700_000_001))
    stamp2 = time.strftime("%Y%m%d%H%M%S", time.gmtime(1_700_000_002))
    assert names == ["out.log", f"out.log.{stamp}", f"out.log.{stamp2}"]  # oldest deleted
    assert (tmp_path / f"out.log.{stamp2}").read_bytes() == b"second 2\n"
    assert path.read_bytes() == b"second 3\n"


@pytest.mark.parametrize(
    ("when", "interval", "start", "expected"),
    [
        ("S", 5, 1000.7, 1005),
        ("M", 1, 1000.0, 1060),
        ("H", 2, 0.0, 7200),
        ("D", 1, 10.0, 86410),
        ("MIDNIGHT", 1, 86400 * 3 + 3600, 86400 * 4),
        ("W3", 1, 86400 * 0 + 5, 86400 * 1),  # 1970-01-01 was a Thursday (weekday 3)
        ("W4", 1, 86400 * 0 + 5, 86400 * 2),
        ("W2", 1, 86400 * 0 + 5, 86400 * 7),
    ],
)
def test_next_rollover(when: str, interval: int, start: float, expected: float) -> None:
    assert TimeRotation(when, interval, 0, utc=True).next_rollover(start) == expected


def test_a_moved_file_is_reopened_by_a_watched_writer(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    writer = FileWriter(str(path), check_interval=0.0)
    writer.write([chunk(b"old\n")])
    os.rename(path, tmp_path / "out.log.1")
    writer.write([chunk(b"new\n")])
    writer.close()
    assert (tmp_path / "out.log.1").read_bytes() == b"old\n"
    assert path.read_bytes() == b"new\n"
    assert writer.reopened == 1


def test_other_writers_check_for_a_moved_file_now_and_then(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    now = [0.0]
    writer = FileWriter(str(path), check_interval=1.0, clock=lambda: now[0])
    writer.write([chunk(b"1\n")])
    path.unlink()
    writer.write([chunk(b"2\n")])  # within the interval: still the old (deleted) file
    now[0] = 1.5
    writer.write([chunk(b"3\n")])
    writer.close()
    assert path.read_bytes() == b"3\n"


def test_a_deleted_directory_fails_until_it_is_back(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    writer = FileWriter(str(directory / "out.log"), check_interval=0.0)
    writer.write([chunk(b"1\n")])
    shutil.rmtree(directory)
    with pytest.raises(SinkError) as caught:
        writer.write([chunk(b"2\n")])
    assert "No such file or directory" in caught.value.reason and caught.value.written == 0
    directory.mkdir()
    writer.write([chunk(b"2\n")])
    writer.close()
    assert (directory / "out.log").read_bytes() == b"2\n"


def test_a_full_device_reports_what_was_written() -> None:
    writer = FileWriter("/dev/full")
    with pytest.raises(SinkError) as caught:
        writer.write([chunk(b"x\n")])
    writer.close()
    assert "No space left on device" in caught.value.reason
    assert caught.value.written == 0


def test_skip_bytes_keeps_the_tail_of_a_partly_written_chunk() -> None:
    batch = [chunk(b"abc\n"), chunk(b"def\n"), chunk(b"ghi\n")]
    assert [b"".join(c.parts) for c in skip_bytes(batch, 6)] == [b"f\n", b"ghi\n"]
    assert skip_bytes(batch, 12) == []


def test_console_pieces_stay_whole_lines_within_pipe_buf() -> None:
    data = b"".join(b"%d\n" % i for i in range(1000))
    pieces = _atomic_pieces(data, 100)
    assert b"".join(pieces) == data
    assert all(len(p) <= 100 and p.endswith(b"\n") for p in pieces)
    assert _atomic_pieces(b"x" * 300 + b"\ny\n", 100) == [b"x" * 300 + b"\n", b"y\n"]


# -- the queue and its thread --------------------------------------------------------------------


class GatedWriter:
    """Writes into a list; blocks while `gate` is clear; fails while `failure` is set."""

    description = "test writer"

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.gate = threading.Event()
        self.gate.set()
        self.failure: str | None = None
        self.closed = False

    def write(self, batch: list[Chunk]) -> None:
        self.gate.wait()
        if self.failure is not None:
            raise SinkError(self.failure)
        self.written.extend(b"".join(c.parts) for c in batch)

    def close(self) -> None:
        self.closed = True


async def until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_the_queue_is_bounded_and_says_when_there_is_room() -> None:
    async def scenario() -> None:
        writer = GatedWriter()
        writer.gate.clear()
        reports: list[SinkReport] = []
        sink = Sink(writer, asyncio.get_running_loop(), 100, lambda s, r: reports.append(r))
        assert sink.put([b"a" * 59 + b"\n"], 60, ORIGIN) is True
        assert sink.put([b"b" * 59 + b"\n"], 60, ORIGIN) is False  # full: stop reading
        assert sink.full
        rooms: list[str] = []
        sink.when_room("reader", lambda: rooms.append("room"))
        await asyncio.sleep(0.05)
        assert rooms == []
        writer.gate.set()
        await until(lambda: rooms == ["room"])
        assert not sink.full
        sink.close()
        assert await sink.wait_closed(5)
        assert writer.written[0].startswith(b"a") and writer.closed
        assert reports == []

    asyncio.run(scenario())


def test_a_failing_writer_is_retried_and_its_recovery_reported() -> None:
    async def scenario() -> None:
        writer = GatedWriter()
        writer.failure = "disk full"
        reports: list[SinkReport] = []
        sink = Sink(writer, asyncio.get_running_loop(), 1000, lambda s, r: reports.append(r))
        sink.put([b"kept\n"], 5, ORIGIN)
        await until(lambda: reports == [SinkFailing("disk full")])
        assert sink.queued == 5  # held, not lost
        writer.failure = None
        await until(lambda: len(reports) == 2)
        assert isinstance(reports[1], SinkRecovered)
        assert writer.written == [b"kept\n"] and sink.queued == 0
        sink.close()
        assert await sink.wait_closed(5)

    asyncio.run(scenario())


def test_closing_a_failing_sink_counts_what_is_lost() -> None:
    async def scenario() -> None:
        writer = GatedWriter()
        writer.failure = "gone"
        reports: list[SinkReport] = []
        sink = Sink(writer, asyncio.get_running_loop(), 1000, lambda s, r: reports.append(r))
        sink.put([b"a\nb\n"], 4, ORIGIN)
        await until(lambda: bool(reports))
        sink.put([b"c\n"], 2, ORIGIN)
        sink.close()
        assert await sink.wait_closed(5)
        await until(lambda: len(reports) >= 3)
        dropped = [r for r in reports if isinstance(r, SinkDropped)]
        total = {
            ORIGIN: tuple(map(sum, zip(*(d.counts[ORIGIN] for d in dropped), strict=True)))
        }
        assert total == {ORIGIN: (3, 6)}
        assert sink.queued == 0

    asyncio.run(scenario())


class BatchRecorder:
    """Records how the writer thread got its chunks: one list per write call."""

    description = "recorder"

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []

    def write(self, batch: list[Chunk]) -> None:
        self.batches.append([b"".join(c.parts) for c in batch])

    def close(self) -> None:
        pass


def test_reads_put_close_together_reach_the_writer_in_one_batch() -> None:
    async def scenario() -> None:
        writer = BatchRecorder()
        sink = Sink(writer, asyncio.get_running_loop(), 1 << 20, lambda s, r: None)
        for line in (b"a\n", b"b\n", b"c\n"):
            sink.put([line], 2, ORIGIN)
        await until(lambda: sink.queued == 0)
        assert writer.batches == [[b"a\n", b"b\n", b"c\n"]]
        sink.close()
        assert await sink.wait_closed(5)

    asyncio.run(scenario())


def test_a_big_put_goes_to_the_writer_without_waiting_for_the_loop() -> None:
    async def scenario() -> None:
        writer = BatchRecorder()
        sink = Sink(writer, asyncio.get_running_loop(), 4 * HAND_OVER_BYTES, lambda s, r: None)
        big = b"x" * (HAND_OVER_BYTES - 1) + b"\n"
        sink.put([big], len(big), ORIGIN)
        # The loop does not run here: only the size can have sent it to the writer thread.
        deadline = time.monotonic() + 5
        while not writer.batches:
            assert time.monotonic() < deadline, "the writer never got the big chunk"
            time.sleep(0.005)
        assert writer.batches == [[big]]
        sink.close()
        assert await sink.wait_closed(5)

    asyncio.run(scenario())
