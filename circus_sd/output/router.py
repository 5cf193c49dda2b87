"""The arbiter's side of child output: a pipe per process and stream, read by the event loop.

Data path: child --pipe--> StreamReader (loop: non-blocking reads of up to 256 KiB) -->
LineAssembler (whole lines) --> Sink (bounded queue) --> the sink's writer thread --> file,
journald, the arbiter's stdout or a user's class.

Backpressure, the stated policy: when a sink's queue is full, the readers feeding it stop
reading their pipes, so the children's writes wait (the pipe holds 1 MiB). A reader that has
waited `backpressure_timeout` seconds reads again and drops whole lines while the sink is still
full, counting them; when the sink has caught up (its queue is half empty) everything is
written again. Drops are logged and published as `watcher.<name>.dropped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import enum
import fcntl
import logging
import os
import time
from collections.abc import Callable, Hashable
from typing import Any

from circus_sd.config.model import WatcherConfig
from circus_sd.config.streams import (
    FANCY_STDOUT,
    JOURNAL,
    STDOUT,
    TIMED_ROTATING_FILE,
    WATCHED_FILE,
    StreamConfig,
)
from circus_sd.output import journal
from circus_sd.output.console import ConsoleWriter, console_style
from circus_sd.output.custom import CustomWriter
from circus_sd.output.files import CHECK_INTERVAL, FileWriter, SizeRotation, TimeRotation
from circus_sd.output.journal import JournalWriter
from circus_sd.output.lines import Buffer, LineAssembler, LineStyle
from circus_sd.output.sink import (
    Origin,
    Sink,
    SinkDropped,
    SinkFailing,
    SinkRecovered,
    SinkReport,
    Writer,
    count_lines,
)
from circus_sd.spawner import JournalStreamSetup

log = logging.getLogger("circus_sd")

READ_SIZE = 256 << 10
PIPE_SIZE = 1 << 20
# A busy stream (read again within this delay, and not much there) is left alone this long, so
# that the next read takes a big chunk: 50-100x fewer reads, wakeups and hand-overs at full
# speed; output that comes now and then is still read at once.
GATHER_DELAY = 0.002
SINK_LIMIT = 4 << 20
# An unused sink stays open this long, so that a restarted process finds it still open.
LINGER = 2.0
# Drops are summed up and reported (log line + event) at most this often per watcher.
REPORT_EVERY = 1.0
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt(3)

Publish = Callable[[str, str, dict[str, Any]], None]
STREAMS = (("stdout", 1), ("stderr", 2))


def keep_freed_memory() -> None:
    """Let glibc keep freed read buffers instead of unmapping them and faulting in fresh pages.

    Reads of 256 KiB are freed by the writer threads once written; by default glibc gives such
    memory back to the kernel (mmap threshold, heap trimming), and the next read faults in
    zeroed pages again. Keeping up to 16 MiB measured 30 % less arbiter CPU per MB written.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 4 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 16 << 20)


def effective_stream(
    config: WatcherConfig, stream: str, journal_default: bool
) -> StreamConfig | None:
    """What a watcher's stream goes to; None when closed (/dev/null)."""
    if config.close_child_stdout if stream == "stdout" else config.close_child_stderr:
        return None
    chosen = config.stdout_stream if stream == "stdout" else config.stderr_stream
    if chosen is not None:
        return chosen
    return StreamConfig(class_name=JOURNAL if journal_default else STDOUT)


class _State(enum.Enum):
    READING = "reading"
    GATHERING = "gathering"  # busy: letting the pipe fill a little before the next read
    PAUSED = "paused"  # the sink is full: the pipe is not read, the child's writes wait
    DROPPING = "dropping"  # paused too long: reading, and dropping lines the sink has no room for


class SinkUse:
    """A sink as the loop sees it: who uses it, and its drop episode."""

    def __init__(self, key: Hashable, sink: Sink, config: StreamConfig) -> None:
        self.key = key
        self.sink = sink
        self.config = config
        self.users = 0
        self.close_timer: asyncio.TimerHandle | None = None
        self.failing: str | None = None
        self.dropping_since: float | None = None


class StreamReader:
    """One process's stdout or stderr: its pipe, its line assembler, its sink."""

    def __init__(
        self,
        router: OutputRouter,
        fd: int,
        use: SinkUse,
        assembler: LineAssembler,
        origin: Origin,
        backpressure_timeout: float,
    ) -> None:
        self.router = router
        self.fd = fd
        self.use = use
        self.assembler = assembler
        self.origin = origin
        self.backpressure_timeout = backpressure_timeout
        self.state = _State.READING
        self._timer: asyncio.TimerHandle | None = None
        self.read_bytes = 0
        self._last_read = 0.0
        self.closed = False

    def start(self) -> None:
        self.router.loop.add_reader(self.fd, self.on_readable)

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
        parts = self.assembler.feed(data, time.time())
        if parts:
            self._deliver(parts)
        now = time.monotonic()
        if (
            self.state is _State.READING
            and len(data) < READ_SIZE // 2
            and now - self._last_read < GATHER_DELAY
        ):
            self._gather()
        self._last_read = now

    def _gather(self) -> None:
        loop = self.router.loop
        loop.remove_reader(self.fd)
        self.state = _State.GATHERING
        self._timer = loop.call_later(GATHER_DELAY, self._gathered)

    def _gathered(self) -> None:
        self._timer = None
        if self.state is _State.GATHERING:
            self.state = _State.READING
            self.router.loop.add_reader(self.fd, self.on_readable)

    def _deliver(self, parts: list[Buffer]) -> None:
        size = 0
        for part in parts:
            size += len(part)
        for tap in self.router.taps:
            tap(self.origin, parts)
        sink = self.use.sink
        if self.state is _State.DROPPING and sink.full:
            self.router.dropped(
                self.origin, sink.description, count_lines(parts), size, "backpressure"
            )
            return
        if not sink.put(parts, size, self.origin) and self.state is _State.READING:
            self._pause()

    def _pause(self) -> None:
        loop = self.router.loop
        loop.remove_reader(self.fd)
        self.state = _State.PAUSED
        self._timer = loop.call_later(self.backpressure_timeout, self._stop_waiting)
        self.use.sink.when_room(self, self._on_room)

    def _stop_waiting(self) -> None:
        self._timer = None
        if self.state is not _State.PAUSED:
            return
        self.state = _State.DROPPING
        self.router.loop.add_reader(self.fd, self.on_readable)
        self.router.started_dropping(self)

    def _on_room(self) -> None:
        if self.state is _State.PAUSED:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.router.loop.add_reader(self.fd, self.on_readable)
        self.state = _State.READING
        self.router.caught_up(self.use)

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
                self.use.sink.put(parts, sum(len(p) for p in parts), self.origin)
        self.finish()

    def finish(self) -> None:
        """EOF (or shutdown): the last incomplete line goes out, the pipe is closed."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.state in (_State.READING, _State.DROPPING):
            self.router.loop.remove_reader(self.fd)
        self.use.sink.forget(self)
        parts = self.assembler.flush(time.time())
        if parts and not self.use.sink.closed:
            self.use.sink.put(parts, sum(len(p) for p in parts), self.origin)
        os.close(self.fd)
        self.router.reader_done(self)


@dataclasses.dataclass
class _PendingStream:
    stream: str
    read_fd: int
    use: SinkUse
    style: Callable[[int], LineStyle]


class ProcessOutput:
    """The output plumbing of one process being spawned: fds for the child, then readers."""

    def __init__(self, router: OutputRouter, config: WatcherConfig, wid: int) -> None:
        self.router = router
        self.config = config
        self.wid = wid
        self.child_fds: list[int] = []  # write ends, to pass to the spawner
        self.fd_targets: list[int] = []
        self.journal_streams: list[JournalStreamSetup] = []
        self._pending: list[_PendingStream] = []

    def sent(self) -> None:
        """The spawner has its copies of the write ends: ours must go, or EOF never comes."""
        for fd in self.child_fds:
            os.close(fd)
        self.child_fds = []

    def attach(self, pid: int) -> None:
        """The child exists: start reading its pipes."""
        for pending in self._pending:
            origin = Origin(self.config.name, self.wid, pid, pending.stream)
            assembler = LineAssembler(self.config.max_line, pending.style(pid))
            reader = StreamReader(
                self.router,
                pending.read_fd,
                pending.use,
                assembler,
                origin,
                self.config.backpressure_timeout,
            )
            self.router.readers.add(reader)
            reader.start()
        self._pending = []

    def discard(self) -> None:
        """The spawn failed: close everything."""
        self.sent()
        for pending in self._pending:
            os.close(pending.read_fd)
            self.router.release(pending.use)
        self._pending = []


class OutputRouter:
    """Creates each process's pipes, reads them, and shares sinks between processes."""

    def __init__(
        self,
        publish: Publish,
        journal_default: bool | None = None,
        is_root: bool | None = None,
        journal_stdout_socket: str = journal.STDOUT_SOCKET,
    ) -> None:
        if journal_default is None:
            from circus_sd.logging_setup import stderr_is_journal

            journal_default = stderr_is_journal()
        self.journal_default = journal_default
        self.is_root = os.geteuid() == 0 if is_root is None else is_root
        self.journal_stdout_socket = journal_stdout_socket
        keep_freed_memory()
        self._publish = publish
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uses: dict[Hashable, SinkUse] = {}
        self.readers: set[StreamReader] = set()
        # Called in the loop with every block of whole lines read (before any drop): the hook
        # for an output PUB socket (`output_endpoint`) and readiness by log line.
        self.taps: list[Callable[[Origin, list[Buffer]], None]] = []
        self._warned: set[Hashable] = set()
        # (watcher, stream, sink description, reason) -> [lines, bytes] not yet reported
        self._unreported: dict[tuple[str, str, str, str], list[int]] = {}
        self._report_timer: asyncio.TimerHandle | None = None
        # Lines and bytes dropped per watcher since the start (for stats).
        self.dropped_totals: dict[str, list[int]] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # -- a process's pipes -----------------------------------------------------------------------

    def prepare(self, config: WatcherConfig, wid: int) -> ProcessOutput:
        """Pipes (and journald stream setups) for a process about to be spawned."""
        output = ProcessOutput(self, config, wid)
        try:
            for stream, target in STREAMS:
                chosen = effective_stream(config, stream, self.journal_default)
                if chosen is None:
                    continue
                self._plumb(output, config, wid, stream, target, chosen)
        except BaseException:
            output.discard()
            raise
        return output

    def _plumb(
        self,
        output: ProcessOutput,
        config: WatcherConfig,
        wid: int,
        stream: str,
        target: int,
        chosen: StreamConfig,
    ) -> None:
        if chosen.class_name == JOURNAL and chosen.direct:
            if os.path.exists(self.journal_stdout_socket):
                output.journal_streams.append(
                    JournalStreamSetup(
                        target=target,
                        identifier=chosen.identifier or config.name,
                        priority=chosen.priority
                        if chosen.priority is not None
                        else journal.DEFAULT_PRIORITY[stream],
                        level_prefix=chosen.level_prefix,
                        socket_path=self.journal_stdout_socket,
                    )
                )
            else:
                self._warn_once(
                    (config.name, stream, "direct"),
                    "%s: %s_stream.direct: %s does not exist (journald not running?); "
                    "the output goes through the arbiter instead",
                    config.name,
                    stream,
                    self.journal_stdout_socket,
                )
        # Always a pipe, even in direct mode: the child uses it if it cannot reach journald.
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.is_root:
            # Only root: other users' pipes count against pipe-user-pages-soft, and past it
            # every new pipe of theirs shrinks to one page.
            with contextlib.suppress(OSError):
                fcntl.fcntl(read_fd, _F_SETPIPE_SZ, PIPE_SIZE)
        # The child gets a blocking write end: a full pipe makes its writes wait.
        os.set_blocking(write_fd, True)
        output.child_fds.append(write_fd)
        output.fd_targets.append(target)
        try:
            use, style = self._sink_for(config, wid, stream, chosen)
        except BaseException:
            os.close(read_fd)
            raise
        output._pending.append(_PendingStream(stream, read_fd, use, style))

    # -- sinks -----------------------------------------------------------------------------------

    def _sink_for(
        self, config: WatcherConfig, wid: int, stream: str, chosen: StreamConfig
    ) -> tuple[SinkUse, Callable[[int], LineStyle]]:
        """The (shared) sink for a stream, and the style of its lines given the pid."""
        name = config.name
        plain: Callable[[int], LineStyle] = lambda pid: LineStyle()  # noqa: E731
        key: Hashable
        if chosen.is_file:
            assert chosen.filename is not None
            path = chosen.filename.replace("$(circus.wid)", str(wid))
            key = ("file", path)
            fmt = chosen.time_format

            def style(pid: int) -> LineStyle:
                # Circus's prefix: "TIME [PID] | line".
                return LineStyle(f"[{pid}] | ".encode(), time_format=fmt) if fmt else LineStyle()

            return self._use(key, chosen, lambda: self._file_writer(path, chosen)), style
        if chosen.class_name in (STDOUT, FANCY_STDOUT):
            fd = 1 if stream == "stdout" else 2
            fancy = chosen.class_name == FANCY_STDOUT
            lines = console_style(name, wid, chosen.time_format, fancy, chosen.color)
            return self._use(("console", fd), chosen, lambda: ConsoleWriter(fd)), (
                lambda pid: lines
            )
        if chosen.class_name == JOURNAL:
            key = ("journal", name, stream, chosen)
            return self._use(key, chosen, lambda: self._journal_writer(chosen)), plain
        key = ("custom", name, stream, chosen)
        return self._use(key, chosen, lambda: CustomWriter(chosen.class_name, chosen.raw)), plain

    def _file_writer(self, path: str, chosen: StreamConfig) -> FileWriter:
        rotation: SizeRotation | TimeRotation | None = None
        if chosen.class_name == TIMED_ROTATING_FILE:
            rotation = TimeRotation(
                chosen.rotate_when, chosen.rotate_interval, chosen.backup_count, chosen.utc
            )
        elif chosen.class_name != WATCHED_FILE and chosen.max_bytes and chosen.backup_count:
            rotation = SizeRotation(chosen.max_bytes, chosen.backup_count)
        check = 0.0 if chosen.class_name == WATCHED_FILE else CHECK_INTERVAL
        return FileWriter(path, rotation, check_interval=check)

    def _journal_writer(self, chosen: StreamConfig) -> JournalWriter:
        return JournalWriter(
            chosen.identifier, chosen.priority, chosen.level_prefix, object_pid=self.is_root
        )

    def _use(
        self, key: Hashable, config: StreamConfig, make: Callable[[], Writer]
    ) -> SinkUse:
        use = self._uses.get(key)
        if use is None:
            sink = Sink(make(), self.loop, SINK_LIMIT, self._on_sink_report)
            use = self._uses[key] = SinkUse(key, sink, config)
        elif use.config != config and use.sink.description.startswith("file "):
            self._warn_once(
                ("conflict", key),
                "%s is written by streams configured differently; the first one's "
                "options (%s) apply",
                use.sink.description,
                use.config.class_name,
            )
        if use.close_timer is not None:
            use.close_timer.cancel()
            use.close_timer = None
        use.users += 1
        return use

    def release(self, use: SinkUse) -> None:
        use.users -= 1
        if use.users <= 0 and use.close_timer is None:
            use.close_timer = self.loop.call_later(LINGER, self._close_unused, use)

    def _close_unused(self, use: SinkUse) -> None:
        use.close_timer = None
        if use.users <= 0 and self._uses.get(use.key) is use:
            del self._uses[use.key]
            use.sink.close()

    def reader_done(self, reader: StreamReader) -> None:
        self.readers.discard(reader)
        self.release(reader.use)

    # -- reports ---------------------------------------------------------------------------------

    def _warn_once(self, key: Hashable, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def started_dropping(self, reader: StreamReader) -> None:
        use = reader.use
        if use.dropping_since is None:
            use.dropping_since = time.monotonic()
            log.warning(
                "%s: %s has not kept up for %g s: dropping whole lines of output until it does",
                reader.origin.watcher,
                use.sink.description,
                reader.backpressure_timeout,
            )

    def caught_up(self, use: SinkUse) -> None:
        if use.dropping_since is not None:
            log.info(
                "%s caught up after %.1f s of dropping lines",
                use.sink.description,
                time.monotonic() - use.dropping_since,
            )
            use.dropping_since = None

    def dropped(self, origin: Origin, sink: str, lines: int, size: int, reason: str) -> None:
        """Count lines dropped; they are reported (log and event) within REPORT_EVERY."""
        key = (origin.watcher, origin.stream, sink, reason)
        counts = self._unreported.setdefault(key, [0, 0])
        counts[0] += lines
        counts[1] += size
        totals = self.dropped_totals.setdefault(origin.watcher, [0, 0])
        totals[0] += lines
        totals[1] += size
        if self._report_timer is None:
            self._report_timer = self.loop.call_later(REPORT_EVERY, self._report_drops)

    def _report_drops(self) -> None:
        self._report_timer = None
        unreported, self._unreported = self._unreported, {}
        for (watcher, stream, sink, reason), (lines, size) in unreported.items():
            log.warning(
                "%s: dropped %d line(s) (%d bytes) of %s for %s (%s)",
                watcher, lines, size, stream, sink, reason,
            )
            self._publish(
                watcher,
                "dropped",
                {"stream": stream, "lines": lines, "bytes": size, "sink": sink, "reason": reason},
            )

    def _on_sink_report(self, sink: Sink, report: SinkReport) -> None:
        use = next((u for u in self._uses.values() if u.sink is sink), None)
        if isinstance(report, SinkFailing):
            log.warning(
                "%s: %s; output waits and is retried (dropped after backpressure_timeout)",
                sink.description, report.reason,
            )
            if use is not None:
                use.failing = report.reason
        elif isinstance(report, SinkRecovered):
            log.info("%s works again after %.1f s", sink.description, report.seconds)
            if use is not None:
                use.failing = None
        elif isinstance(report, SinkDropped):
            for origin, (lines, size) in report.counts.items():
                self.dropped(origin, sink.description, lines, size, report.reason)

    # -- shutdown --------------------------------------------------------------------------------

    async def close(self, timeout: float = 5.0) -> None:
        """Read what the pipes still hold, write what the sinks still hold (bounded in time)."""
        for reader in list(self.readers):
            reader.drain()
        uses = list(self._uses.values())
        self._uses.clear()
        for use in uses:
            if use.close_timer is not None:
                use.close_timer.cancel()
            use.sink.close()
        deadline = time.monotonic() + timeout
        for use in uses:
            if not await use.sink.wait_closed(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "%s: still blocked at exit; its last lines are lost", use.sink.description
                )
        # Reports the writer threads sent while finishing.
        await asyncio.sleep(0)
        if self._report_timer is not None:
            self._report_timer.cancel()
        self._report_drops()

