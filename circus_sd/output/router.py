"""The arbiter's side of child output: each process's pipes, the sinks they share, the reports.

Data path: child --pipe (64 KiB to 1 MiB: pipe_sizes.py)--> StreamReader (the loop: reads of up
to 256 KiB, reader.py) --> LineAssembler (whole lines, lines.py) --> Sink (a queue bounded to 4
MiB, sink.py) --> the sink's writer thread --> a file (files.py), journald (journal.py), the
arbiter's stdout (console.py) or a user's class (custom.py). Backpressure: reader.py. Lines
dropped anywhere are summed up here, logged and published as `watcher.<name>.dropped` at most
once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

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
from circus_sd.output.drops import DropReport
from circus_sd.output.files import CHECK_INTERVAL, FileWriter, SizeRotation, TimeRotation
from circus_sd.output.journal import JournalWriter
from circus_sd.output.lines import LineAssembler, LineStyle
from circus_sd.output.pipe_sizes import PipeSizes, user_limit
from circus_sd.output.reader import StreamReader, Tap
from circus_sd.output.sink import (
    Origin,
    Sink,
    SinkDropped,
    SinkFailing,
    SinkRecovered,
    SinkReport,
    Writer,
)
from circus_sd.spawn_protocol import JournalStreamSetup

if TYPE_CHECKING:
    from circus_sd.handover import CarriedPipe

log = logging.getLogger("circus_sd")

SINK_LIMIT = 4 << 20
# An unused sink stays open this long, so that a restarted process finds it still open.
LINGER = 2.0
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


class SinkUse:
    """A sink as the loop sees it: who uses it, and its drop episode."""

    def __init__(self, key: Hashable, sink: Sink, config: StreamConfig) -> None:
        self.key = key
        self.sink = sink
        self.config = config
        self.users = 0
        self.close_timer: asyncio.TimerHandle | None = None
        self.dropping_since: float | None = None


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

    def add_stream(self, pending: _PendingStream) -> None:
        """A pipe whose read end is read once the child exists."""
        self._pending.append(pending)

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
                pending.use.sink,
                assembler,
                origin,
                self.config.backpressure_timeout,
                self.router.pipes,
            )
            self.router.readers[reader] = pending.use
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
        self.pipes = PipeSizes(user_limit())
        keep_freed_memory()
        self._publish = publish
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uses: dict[Hashable, SinkUse] = {}
        self.readers: dict[StreamReader, SinkUse] = {}
        # Called in the loop with every block of whole lines read (before any drop): the hook
        # for an output PUB socket (`output_endpoint`) and readiness by log line.
        self.taps: list[Tap] = []
        self._warned: set[Hashable] = set()
        # (watcher, stream, sink description, reason) -> [lines, bytes] not yet reported
        self.drops = DropReport(publish, lambda delay, then: self.loop.call_later(delay, then))

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
        self.pipes.made(read_fd)
        # The child gets a blocking write end: a full pipe makes its writes wait.
        os.set_blocking(write_fd, True)
        output.child_fds.append(write_fd)
        output.fd_targets.append(target)
        try:
            use, style = self._sink_for(config, wid, stream, chosen)
        except BaseException:
            os.close(read_fd)
            raise
        output.add_stream(_PendingStream(stream, read_fd, use, style))

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
        use = self.readers.pop(reader, None)
        if use is not None:
            self.release(use)

    # -- reports ---------------------------------------------------------------------------------

    def _warn_once(self, key: Hashable, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def started_dropping(self, reader: StreamReader) -> None:
        use = self.readers[reader]
        if use.dropping_since is None:
            use.dropping_since = time.monotonic()
            log.warning(
                "%s: %s has not kept up for %g s: dropping whole lines of output until it does",
                reader.origin.watcher,
                use.sink.description,
                reader.backpressure_timeout,
            )

    def caught_up(self, reader: StreamReader) -> None:
        use = self.readers[reader]
        if use.dropping_since is not None:
            log.info(
                "%s caught up after %.1f s of dropping lines",
                use.sink.description,
                time.monotonic() - use.dropping_since,
            )
            use.dropping_since = None

    def dropped(self, origin: Origin, sink: str, lines: int, size: int, reason: str) -> None:
        """Count lines dropped: reported as events within a second, in the log now and then."""
        self.drops.add(origin, sink, lines, size, reason)

    def _on_sink_report(self, sink: Sink, report: SinkReport) -> None:
        if isinstance(report, SinkFailing):
            log.warning(
                "%s: %s; output waits and is retried (dropped after backpressure_timeout)",
                sink.description, report.reason,
            )
        elif isinstance(report, SinkRecovered):
            log.info("%s works again after %.1f s", sink.description, report.seconds)
        elif isinstance(report, SinkDropped):
            for origin, (lines, size) in report.counts.items():
                self.dropped(origin, sink.description, lines, size, report.reason)

    # -- shutdown --------------------------------------------------------------------------------

    async def close(self, timeout: float = 5.0) -> None:
        """Read what the pipes still hold, write what the sinks still hold (bounded in time)."""
        for reader in list(self.readers):
            reader.drain()
        await self._close_sinks(timeout)

    # -- re-execution ----------------------------------------------------------------------------

    async def carry(self, timeout: float = 5.0) -> list[CarriedPipe]:
        """A re-execution: stop reading every pipe (the children's writes wait meanwhile),
        write what the sinks hold, and say what the next program reads from where."""
        from circus_sd.handover import CarriedPipe

        pipes = []
        for reader, use in list(self.readers.items()):
            fd, held = reader.carry()
            origin = reader.origin
            pipes.append(
                CarriedPipe(origin.pid, origin.watcher, origin.wid, origin.stream, fd, held)
            )
            del self.readers[reader]
            use.users -= 1
        await self._close_sinks(timeout)
        return pipes

    def adopt(self, config: WatcherConfig, pipe: CarriedPipe) -> None:
        """Read a pipe a previous program of this arbiter read, the line it began first."""
        chosen = effective_stream(config, pipe.stream, self.journal_default)
        if chosen is None:  # closed since by `set`: nothing to write it to
            chosen = StreamConfig(class_name=JOURNAL if self.journal_default else STDOUT)
        use, style = self._sink_for(config, pipe.wid, pipe.stream, chosen)
        assembler = LineAssembler(config.max_line, style(pipe.pid))
        assembler.hold(pipe.held)
        os.set_inheritable(pipe.fd, False)
        origin = Origin(config.name, pipe.wid, pipe.pid, pipe.stream)
        reader = StreamReader(
            self, pipe.fd, use.sink, assembler, origin, config.backpressure_timeout, self.pipes
        )
        self.readers[reader] = use
        reader.start()

    async def _close_sinks(self, timeout: float) -> None:
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
        self.drops.flush()

