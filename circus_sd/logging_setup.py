"""The arbiter's own log: journald, stderr, a file, syslog, or a logging config file.

Whatever the output, records are written by a thread: the event loop only puts them in a
bounded queue, so that an output that stops taking them (a pipe nobody drains, a paused
pager, a stuck log shipper) never stops supervision. Records that do not fit are counted,
dropped, and reported by a line "N log records dropped" where they went missing.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
import urllib.parse

from circus_sd.config.model import ArbiterConfig
from circus_sd.journal_log import JournalLogHandler, journal_reachable, syslog_priority
from circus_sd.signal_mask import handled_signals_blocked

# Records queued for the writer at most; later ones are dropped (and counted) until it catches up.
QUEUE_RECORDS = 1024
# At exit, the writer gets this long to write what is queued: a stuck output must not hold the
# exit that `systemctl stop` waits for.
FLUSH_TIMEOUT = 2.0

# Under journald: no timestamp (journald adds one).
JOURNAL_FORMAT = "%(levelname)s %(message)s"


class JournalPrefixFormatter(logging.Formatter):
    """The level as an sd-daemon(3) `<N>` prefix, from which journald reads the priority."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{syslog_priority(record.levelno)}>{super().format(record)}"


def stderr_is_journal() -> bool:
    """True when systemd connected our stderr to journald ($JOURNAL_STREAM is its dev:ino)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    try:
        stat = os.fstat(2)
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def configure_logging(
    config: ArbiterConfig,
    level: str | None = None,
    output: str | None = None,
    loggerconfig: str | None = None,
) -> None:
    """Command-line values win over the [circus] section's, as in circusd."""
    loggerconfig = loggerconfig or config.loggerconfig
    _retire_writer()
    if loggerconfig:
        _load_logging_config(loggerconfig)
        # The root logger's handlers go behind the queue; handlers the file attaches to other
        # loggers still write in the thread that logs.
        _start_writer(logging.getLogger().handlers)
        return
    handler = _handler_for(output or config.logoutput)
    if (
        isinstance(handler, logging.StreamHandler)
        and handler.stream is sys.stderr
        and stderr_is_journal()
    ):
        # Natively, so that lines about a watcher carry its fields (journal_log.py); the
        # `<N>`-prefixed stream is what is left without journald's socket or systemd-python.
        if journal_reachable():
            handler = JournalLogHandler(identifier=_identifier())
            handler.setFormatter(logging.Formatter(JOURNAL_FORMAT))
        else:
            handler.setFormatter(JournalPrefixFormatter(JOURNAL_FORMAT))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s circus-sd[%(process)d] %(levelname)s %(message)s")
        )
    root = logging.getLogger()
    root.setLevel((level or config.loglevel).upper())
    _start_writer([handler])


def _identifier() -> str:
    """SYSLOG_IDENTIFIER=: what systemd gives the lines of our stderr (the program's name)."""
    return os.path.basename(sys.argv[0]) or "circus-sd"


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Puts records in a bounded queue, never waiting: one that does not fit is counted.

    The count is reported by a record put in the queue at the next one that fits, so that the
    line "N log records dropped" sits where they went missing (or by the writer, once it has
    written everything queued).
    """

    def __init__(self, records: queue.Queue[logging.LogRecord | None]) -> None:
        super().__init__(records)
        self.records = records
        self._count_lock = threading.Lock()
        self._unreported = 0
        self.dropped = 0  # since the start, for `dstats`

    def emit(self, record: logging.LogRecord) -> None:
        if self.records.full():
            # Checked before formatting: a flood costs the loop little once the queue is full.
            self._count_drop()
            return
        if self._unreported:
            count = self.take_unreported()
            if not self._put(drop_notice(count)):
                self._count_drop(count, new=False)  # reported at a later record then
        try:
            prepared = self.prepare(record)
        except Exception:
            # Unformattable (a bug in a log call): the writer's handler says so, in its thread,
            # rather than handleError writing to stderr here.
            prepared = record
        if not self._put(prepared):
            self._count_drop()

    def _put(self, record: logging.LogRecord) -> bool:
        try:
            self.records.put_nowait(record)
        except queue.Full:  # a drop notice just took the last place
            return False
        return True

    def _count_drop(self, records: int = 1, new: bool = True) -> None:
        with self._count_lock:
            self._unreported += records
            if new:
                self.dropped += records

    def take_unreported(self) -> int:
        """Records dropped since the last report; they count as reported now."""
        with self._count_lock:
            count, self._unreported = self._unreported, 0
        return count


def drop_notice(count: int) -> logging.LogRecord:
    """The record that reports `count` dropped records."""
    return logging.LogRecord(
        "circus_sd.log", logging.WARNING, __file__, 0,
        "%d log records dropped: the log output did not keep up", (count,), None,
    )


class LogWriter(logging.handlers.QueueListener):
    """The thread that writes queued records; once it has caught up, it reports drops."""

    def __init__(self, queued: DroppingQueueHandler, handlers: list[logging.Handler]) -> None:
        super().__init__(queued.records, *handlers, respect_handler_level=True)
        self.queued = queued
        self.targets = handlers

    def handle(self, record: logging.LogRecord) -> None:
        super().handle(record)
        if self.queued.records.empty():
            count = self.queued.take_unreported()
            if count:
                super().handle(drop_notice(count))

    def finish(self, timeout: float) -> bool:
        """Write what is queued and end the thread, within `timeout` seconds; False if the
        output did not take it all by then (the thread, a daemon, is left as it is)."""
        thread = self._thread
        if thread is None:
            return True
        deadline = time.monotonic() + timeout
        count = self.queued.take_unreported()
        records = self.queued.records
        try:
            if count:
                records.put(drop_notice(count), timeout=timeout)
            # None: QueueListener's end-of-queue sentinel.
            records.put(None, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            return False
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            return False
        self._thread = None
        return True


_writer: LogWriter | None = None
_exit_flush_bounded = False


def _start_writer(handlers: list[logging.Handler]) -> None:
    global _writer
    _bound_exit_flush()
    handlers = list(handlers)  # not root's own list, emptied below
    records: queue.Queue[logging.LogRecord | None] = queue.Queue(QUEUE_RECORDS)
    queued = DroppingQueueHandler(records)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(queued)
    # warnings.warn() writes to stderr itself: through the queue instead.
    logging.captureWarnings(True)
    _writer = LogWriter(queued, handlers)
    with handled_signals_blocked():
        _writer.start()


def stop_logging(timeout: float = FLUSH_TIMEOUT) -> bool:
    """Write what is queued, then log synchronously again; within `timeout` seconds.

    False if the output would not take it in time: the queue then stays in place (later
    records are dropped, never waited for) and the output's handlers must not be flushed
    (`logging.shutdown`), which would wait for the writer stuck in them.
    """
    global _writer
    writer = _writer
    if writer is None:
        return True
    if not writer.finish(timeout):
        return False
    _writer = None
    root = logging.getLogger()
    root.removeHandler(writer.queued)
    for handler in writer.targets:
        root.addHandler(handler)
    return True


def _retire_writer() -> None:
    """Before a new configuration: the previous one's records written, its outputs closed
    (each holds a descriptor: a file, a syslog socket). Outputs a stuck writer is in are left
    as they are: closing one waits for its lock, which the writer holds."""
    writer = _writer
    if writer is None or not stop_logging():
        return
    root = logging.getLogger()
    for handler in writer.targets:
        root.removeHandler(handler)
        with contextlib.suppress(OSError, ValueError):
            handler.close()


def _bound_exit_flush() -> None:
    """logging flushes and closes every handler at exit (atexit), each under its lock: it would
    wait forever for an output the writer is stuck in. Replaced by `_flush_at_exit`, once."""
    global _exit_flush_bounded
    if not _exit_flush_bounded:
        atexit.unregister(logging.shutdown)
        atexit.register(_flush_at_exit)
        _exit_flush_bounded = True


def _flush_at_exit() -> None:
    """The writer gets FLUSH_TIMEOUT to write what is queued; then, only if it has ended,
    logging's own shutdown (a stuck output is left unflushed, as by `stop_logging`)."""
    if stop_logging():
        logging.shutdown()


def dropped_log_records() -> int:
    """Records of the arbiter's log dropped since it started (the output did not keep up)."""
    writer = _writer
    return 0 if writer is None else writer.queued.dropped


def _handler_for(output: str) -> logging.Handler:
    if output in ("-", "stderr"):
        return logging.StreamHandler(sys.stderr)
    if output == "stdout":
        return logging.StreamHandler(sys.stdout)
    if output.startswith("syslog://"):
        url = urllib.parse.urlparse(output)
        facility = url.query or "user"
        address: str | tuple[str, int]
        if url.hostname:
            address = (url.hostname, url.port or logging.handlers.SYSLOG_UDP_PORT)
        else:
            address = url.path or "/dev/log"
        return logging.handlers.SysLogHandler(address=address, facility=facility)
    # WatchedFileHandler reopens the file after logrotate moved it, by path and following
    # links, as root: only where nobody else could plant a link (safe_paths.py), else exit 78.
    from circus_sd import safe_paths

    problem = safe_paths.file_problem(output, shared_ok=False)
    if problem is not None:
        raise ValueError(f"refusing logoutput {output}: {problem}")
    return logging.handlers.WatchedFileHandler(output)


def _load_logging_config(path: str) -> None:
    # Imported only for a loggerconfig: with socketserver, 2 ms of every start and 0.1 MB.
    import logging.config

    if path.endswith(".json"):
        with open(path) as f:
            logging.config.dictConfig(json.load(f))
    elif path.endswith((".yaml", ".yml")):
        raise ValueError(f"{path}: YAML logging configs are not supported; use INI or JSON")
    else:
        logging.config.fileConfig(path, disable_existing_loggers=False)
