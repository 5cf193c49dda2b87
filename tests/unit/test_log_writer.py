"""The arbiter's own log: records go through a bounded queue to a writer thread, never waiting
for the output; those that do not fit are counted and reported."""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from circus_sd import logging_setup
from circus_sd.config.model import ArbiterConfig
from circus_sd.logging_setup import (
    DroppingQueueHandler,
    JournalPrefixFormatter,
    LogWriter,
    configure_logging,
    stop_logging,
)

DEADLINE = 10.0


class GatedHandler(logging.Handler):
    """An output that writes a record only once the test lets it (a pipe nobody reads until
    the test does); it keeps each message written."""

    def __init__(self) -> None:
        super().__init__()
        self._permits = threading.Semaphore(0)
        self._changed = threading.Condition()
        self.entered = 0  # writes begun (each waits for its permit)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.entered += 1
            self._changed.notify_all()
        assert self._permits.acquire(timeout=DEADLINE), "the test never let this write through"
        with self._changed:
            self.messages.append(record.getMessage())
            self._changed.notify_all()

    def allow(self, writes: int = 1000) -> None:
        self._permits.release(writes)

    def wait_for(self, predicate: Callable[[GatedHandler], bool], what: str) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: predicate(self), DEADLINE), what


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging changes the root logger: put it back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    assert stop_logging(DEADLINE)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def stuck_writer(capacity: int) -> tuple[GatedHandler, logging.Logger, LogWriter]:
    """A logger whose queue holds `capacity` records, and its writer, stuck writing "first"."""
    output = GatedHandler()
    records: queue.Queue[logging.LogRecord | None] = queue.Queue(capacity)
    queued = DroppingQueueHandler(records)
    logger = logging.getLogger(f"test.{id(records)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(queued)
    writer = LogWriter(queued, [output])
    writer.start()
    logger.info("first")
    output.wait_for(lambda o: o.entered == 1, "the writer to wait on the output")
    return output, logger, writer


def dropped_in(messages: list[str]) -> int:
    return sum(int(n) for m in messages for n in re.findall(r"^(\d+) log records dropped", m))


def test_a_stuck_output_costs_records_not_waiting() -> None:
    output, logger, writer = stuck_writer(4)
    for n in range(10):
        logger.info("record %d", n)  # returns at once: 4 queued, 6 counted
    assert writer.queued.dropped == 6
    output.allow()
    output.wait_for(lambda o: dropped_in(o.messages) == 6, "the drops to be reported")
    # Reported where records went missing: after those that were queued.
    assert output.messages == [
        "first", "record 0", "record 1", "record 2", "record 3",
        "6 log records dropped: the log output did not keep up",
    ]
    assert writer.finish(DEADLINE)


def test_drops_are_reported_before_the_next_record_that_fits() -> None:
    output, logger, writer = stuck_writer(3)
    for n in range(5):
        logger.info("record %d", n)  # 0-2 queued, 3-4 dropped
    output.allow(2)  # "first" and "record 0" written; "record 1" being written
    output.wait_for(lambda o: o.entered == 3, "two records written")
    logger.info("after")  # room for two: the report, then this record
    output.allow()
    output.wait_for(lambda o: "after" in o.messages, "the next record")
    assert output.messages == [
        "first", "record 0", "record 1", "record 2",
        "2 log records dropped: the log output did not keep up", "after",
    ]
    assert writer.queued.dropped == 2
    assert writer.finish(DEADLINE)


def test_finishing_with_a_stuck_output_gives_up_at_its_deadline() -> None:
    output, logger, writer = stuck_writer(2)
    logger.info("queued")
    logger.info("queued too")
    assert not writer.finish(0.2)
    output.allow()  # the writer, still there, ends at the end of the queue
    assert writer.finish(DEADLINE)
    assert output.messages == ["first", "queued", "queued too"]


def test_the_arbiter_log_is_written_by_a_thread_then_flushed_at_stop(
    root_logging: None, tmp_path: Path
) -> None:
    path = tmp_path / "arbiter.log"
    configure_logging(ArbiterConfig(), level="info", output=str(path))
    root = logging.getLogger()
    assert [type(h) for h in root.handlers] == [DroppingQueueHandler]
    logging.getLogger("circus_sd").info("hello %s", "there")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("circus_sd").exception("it failed")
    assert stop_logging(DEADLINE)
    text = path.read_text()
    assert "INFO hello there" in text
    assert "ERROR it failed" in text and "ValueError: boom" in text
    # Afterwards (the loop has ended) records are written directly.
    assert not any(isinstance(h, DroppingQueueHandler) for h in root.handlers)


def test_journald_output_goes_through_the_queue_too(
    root_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging_setup, "stderr_is_journal", lambda: True)
    # Without journald's native socket: the `<N>`-prefixed stream (journal_log.py otherwise).
    monkeypatch.setattr(logging_setup, "journal_reachable", lambda: False)
    configure_logging(ArbiterConfig(), level="info", output="-")
    assert [type(h) for h in logging.getLogger().handlers] == [DroppingQueueHandler]
    writer = logging_setup._writer
    assert writer is not None
    (target,) = writer.targets
    assert isinstance(target.formatter, JournalPrefixFormatter)


def test_configuring_again_closes_the_previous_output(root_logging: None, tmp_path: Path) -> None:
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    configure_logging(ArbiterConfig(), level="info", output=str(first))
    writer = logging_setup._writer
    assert writer is not None
    (previous,) = writer.targets
    assert isinstance(previous, logging.FileHandler)
    logging.getLogger("circus_sd").info("to the first")
    configure_logging(ArbiterConfig(), level="info", output=str(second))
    # Written, then closed: no descriptor left per configuration.
    assert previous.stream is None
    assert previous not in logging.getLogger().handlers
    logging.getLogger("circus_sd").info("to the second")
    assert stop_logging(DEADLINE)
    assert "to the first" in first.read_text()
    assert "to the second" in second.read_text() and "to the first" not in second.read_text()
