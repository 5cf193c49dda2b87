"""The spawner, as the arbiter sees it: starting its process, and the handle that sends it requests.

The spawner is a small single-threaded process that creates each child with clone(CLONE_PARENT)
and sets it up before exec; its program is circus_sd/spawn_server.py, the messages between us are
circus_sd/spawn_protocol.py's.
"""

from __future__ import annotations

import _pickle
import collections
import contextlib
import errno
import fcntl
import logging
import marshal
import math
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from importlib.machinery import SourceFileLoader
from typing import TYPE_CHECKING, Any

from circus_sd import spawn_protocol
from circus_sd.spawn_protocol import MAX_FDS_PER_MESSAGE, MAX_MESSAGE, SpawnRequest, encode

if TYPE_CHECKING:
    # Not imported here at run time: cli.py imports this module before asyncio's first import,
    # which it makes without TLS.
    import asyncio

    Answer = asyncio.Future[tuple[int, int]]
    Sent = tuple[list[SpawnRequest], list[int], list[Answer]]

# Starts a spawner: its pid and our end of its socket (fork_spawner).
StartSpawner = Callable[[], tuple[int, socket.socket]]
# Called once a lost spawner is gone, before another one starts, with the CLOCK_BOOTTIME time
# (seconds) since which it may have cloned children that it never answered for.
AfterLoss = Callable[[float], None]


class SpawnError(OSError):
    """The spawner could not create the process (e.g. EAGAIN from fork)."""


class SpawnerLost(SpawnError):
    """The spawner was lost (it exited, was killed, or hung) before it answered the request: not
    the program's failure, nor the machine's shortage. Another spawner is started; the request
    is deferred, not counted as a failed start. (EPIPE as its errno.)"""


# -- starting the spawner ------------------------------------------------------------------------


def fork_spawner() -> tuple[int, socket.socket]:
    """Start the spawner; returns its pid and our socket end.

    It is a fresh interpreter (`python -IS`) whose program (`spawner_program`) comes through a
    pipe: no copy of this process's memory, which each clone would copy again. Started
    with posix_spawn, not a fork of this process, so that it may be called at any time, threads
    or not: the arbiter starts another spawner when it loses one.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (ours, theirs):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    program_read, program_write = os.pipe()
    theirs_fd = theirs.fileno()
    cmdline, comm = _own_names()
    argv, fits = _spawner_argv(program_read, len(cmdline))
    if not fits:  # our own command line is too short to be shown by the spawner too
        cmdline = comm = b""
    try:
        # The spawner's two fds; every other fd of ours is close-on-exec (and it closes any
        # other it finds).
        os.set_inheritable(theirs_fd, True)
        os.set_inheritable(program_read, True)
        pid = os.posix_spawn(sys.executable, argv, os.environ)
    except OSError:
        ours.close()
        os.close(program_write)
        raise
    finally:
        theirs.close()
        os.close(program_read)
    program = spawner_program(b"server.main(%d, %r, %r)" % (theirs_fd, cmdline, comm))
    # A pipe that holds it all (110 kB; 64 kB by default): written at once, not as the
    # spawner's interpreter, still starting, gets to read it.
    with contextlib.suppress(OSError):
        fcntl.fcntl(program_write, fcntl.F_SETPIPE_SZ, len(program))
    try:
        view = memoryview(program)
        while view:
            view = view[os.write(program_write, view) :]
    except BrokenPipeError:
        pass  # it could not start: its end of the socket is closed, which the arbiter notices
    finally:
        os.close(program_write)
    return pid, ours


# Isolated (no PYTHON* variables, no user site), no site module: nothing but the standard library.
_FLAGS = "-IS"
# The start of the spawner's program: circus_sd cannot be imported there, so each of its modules
# is run from its compiled code (sent along, marshalled) under its own name, which makes the
# server's `from circus_sd.spawn_protocol import ...` find the protocol module run just before it.
# Code rather than source: the spawner then compiles nothing (4 ms of its start, and 1.4 MB of
# memory that it kept for its whole life).
_LOADER = b"""\
import marshal
import sys


def load(name, path, code):
    module = sys.modules[name] = type(sys)(name)
    module.__file__ = path
    exec(marshal.loads(code), module.__dict__)
    return module


"""
# The spawner's own module, sent as code: never imported by the arbiter.
_SERVER_MODULE = "circus_sd.spawn_server"


def spawner_program(then: bytes) -> bytes:
    """The spawner's program: the protocol and the spawner's own module, each run from its
    compiled code, then the statement `then`, in which `server` is circus_sd.spawn_server."""
    program = [_LOADER]
    for variable, name in ((b"protocol", spawn_protocol.__name__), (b"server", _SERVER_MODULE)):
        path, code = _module_code(name)
        program.append(b"%s = load(%r, %r, %r)\n" % (variable, name, path, code))
    program.append(then + b"\n")
    return b"".join(program)


def _module_code(name: str) -> tuple[str, bytes]:
    """A module of this package: its path and its code, marshalled. The code comes from the
    module's .pyc when that is current, as an import would take it (the spawner runs the same
    interpreter, so marshal's format is the same at both ends); compiled from the source else."""
    package = os.path.dirname(os.path.abspath(spawn_protocol.__file__ or ""))
    path = os.path.join(package, name.rpartition(".")[2] + ".py")
    code = SourceFileLoader(name, path).get_code(name)
    return path, marshal.dumps(code)


def _own_names() -> tuple[bytes, bytes]:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            cmdline = f.read()
        with open("/proc/self/comm", "rb") as f:
            comm = f.read().rstrip(b"\n")
    except OSError:
        return b"", b""
    return cmdline, comm


def _spawner_argv(program_fd: int, length: int) -> tuple[list[str], bool]:
    """The spawner's argv, padded to `length` bytes (NULs included) so that it can show our own
    command line in place (spawn_server._look_like); False if it cannot be made that short."""
    argv = [sys.executable, _FLAGS, f"/dev/fd/{program_fd}"]
    if sys.flags.utf8_mode:
        argv.insert(1, "-Xutf8")
    used = sum(len(os.fsencode(arg)) + 1 for arg in argv)
    if length == used:
        return argv, True
    if length < used + 1:
        return argv, False
    return [*argv, "-" * (length - used - 1)], True


# -- the handle ----------------------------------------------------------------------------------

# Requests in one batch: big enough to spare the spawner a message (and its Python work) per
# child, small enough that the arbiter hears of the first children while later ones are cloned.
MAX_BATCH = 32
# Messages the spawner has not answered past which a loop turn's requests wait for its next
# answer, to go together: it has work meanwhile. Else a start of thousands, once the arbiter
# takes in each answer as it comes, refills the spawn window one process at a time, a message
# each (3,000 processes: 960 messages, 800 of one request; the spawner's CPU +25 %).
AHEAD = 2
# A spawner that has requests to answer and answers none for this long is stuck (stopped, or
# hung): it is killed and another one started. The wait is for one message (at most MAX_BATCH
# requests), re-armed at each answer: a start of 500 processes never has to fit in it. Measured
# on 2 shared cores: 500 clones in 1.4-2.6 s, the longest wait for one answer 0.16-0.28 s; with
# six busy loops on those cores, 6.6 s and 0.74 s. A loss costs a deferral, not a failed start.
ANSWER_DEADLINE = 5.0
# After a loss, how long the new spawner waits for the lost one to be reaped (SIGKILL already
# stops it from cloning: this is for its last clones to be listed among our children).
LOST_REAP_WAIT = 1.0
# Losses in a row: the first spawner is replaced at once, the next ones after a delay that
# doubles from the first to the last. One that answered a request, or lived STABLE seconds,
# had worked: its loss counts as a first one.
RESTART_DELAY_FIRST = 0.5
RESTART_DELAY_MAX = 30.0
STABLE = 60.0

log = logging.getLogger("circus_sd")


class Spawner:
    """The arbiter's handle on the spawner process: pipelined, asynchronous spawn requests.

    The first request of a loop turn is sent at once; those that follow in the same turn (a
    watcher starting N processes) go in batches of MAX_BATCH, the last one at the end of the turn.

    With `start`, a spawner that exits, closes its socket or answers nothing for
    `answer_deadline` seconds is lost: killed, its unanswered requests failed (SpawnerLost),
    and another one started (with a backoff when losses follow each other); requests made
    meanwhile wait for it. The running processes lose nothing: they are the arbiter's children
    (CLONE_PARENT). Children it cloned for requests it did not answer are the arbiter's too, of
    pids it never learned: `after_loss` is called, once the lost spawner is gone and before
    another one clones anything, to deal with them.
    """

    def __init__(
        self,
        pid: int,
        sock: socket.socket,
        start: StartSpawner | None = None,
        answer_deadline: float = ANSWER_DEADLINE,
        after_loss: AfterLoss | None = None,
    ) -> None:
        self._start = start
        # Public: the arbiter sets it once it has the handle.
        self.after_loss = after_loss
        # When each message of `_pending` was sent (CLOCK_BOOTTIME): the spawner cannot have
        # cloned for the unanswered ones before the first of them was sent.
        self._sent_at: collections.deque[float] = collections.deque()
        # The last loss, not dealt with yet by `after_loss`: (monotonic time, busy since).
        self._loss: tuple[float, float | None] | None = None
        self._answer_deadline = answer_deadline
        # One entry per message sent: its future, or the futures of a batch.
        self._pending: collections.deque[Answer | list[Answer]] = collections.deque()
        self._outbox: collections.deque[tuple[bytes, list[int]]] = collections.deque()
        # Requests of this loop turn after its first (None: none sent this turn yet).
        self._queued: list[tuple[SpawnRequest, list[int], Answer]] | None = None
        # Requests of earlier turns waiting for an answer of the spawner (AHEAD).
        self._held: list[tuple[SpawnRequest, list[int], Answer]] = []
        # Messages made while no spawner runs, sent to the next one.
        self._waiting: list[Sent] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = False
        self.closed = False
        # Lost, and another one not started yet.
        self._down = False
        self._losses = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._restart_timer: asyncio.TimerHandle | None = None
        # Spawners killed and not reaped yet: pid -> pidfd.
        self._retired: dict[int, int] = {}
        self.pid = pid
        self._sock = sock
        self._started = 0.0
        self._answered = False
        self._pidfd: int | None = None
        self._take(pid, sock)

    def _take(self, pid: int, sock: socket.socket) -> None:
        """Use this spawner process from now on."""
        self.pid = pid
        self._sock = sock
        self._sock.setblocking(False)
        self._started = time.monotonic()
        self._answered = False
        # Our unreaped child: the pidfd is race-free. It tells us when the spawner exits, and
        # kills it when stuck.
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:
            self._pidfd = None

    @property
    def in_flight(self) -> int:
        """Requests not yet answered: children may exist whose pid we do not know."""
        sent = sum(len(entry) if isinstance(entry, list) else 1 for entry in self._pending)
        waiting = sum(len(futures) for _requests, _fds, futures in self._waiting)
        return sent + waiting + len(self._queued or ()) + len(self._held)

    @property
    def pids(self) -> frozenset[int]:
        """Spawner processes not reaped yet (the running one, killed ones): ours to reap."""
        running = {self.pid} if self._pidfd is not None else set()
        return frozenset({*running, *self._retired})

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._watch()

    def _watch(self) -> None:
        assert self._loop is not None
        self._loop.add_reader(self._sock.fileno(), self._on_readable)
        if self._pidfd is not None:
            self._loop.add_reader(self._pidfd, self._on_exit)

    def _disconnect(self) -> None:
        """Out of the loop, our socket closed, the descriptors of unsent messages closed."""
        self._unwatch()
        self._sock.close()
        for _data, fds in self._outbox:
            for fd in fds:
                os.close(fd)
        self._outbox.clear()

    def _unwatch(self) -> None:
        if self._loop is None:
            return
        self._loop.remove_reader(self._sock.fileno())
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._sock.fileno())
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)

    def spawn(self, request: SpawnRequest, fds: Sequence[int] = ()) -> Answer:
        """Ask for a child; the future gives (pid, exec-status fd) or raises SpawnError.

        The caller keeps ownership of `fds` and may close them once this returns.
        """
        assert self._loop is not None
        future: Answer = self._loop.create_future()
        if self.closed:
            future.set_exception(SpawnError(errno.EPIPE, "the spawner is gone"))
            return future
        copies: list[int] = []
        try:
            for fd in fds:
                copies.append(os.dup(fd))
        except OSError as exc:  # EMFILE: answer like a failed fork
            for fd in copies:
                os.close(fd)
            future.set_exception(SpawnError(exc.errno, exc.strerror))
            return future
        if self._queued is None:
            self._queued = []
            self._loop.call_soon(self._send_queued)
            if len(self._pending) < AHEAD:
                self._send([request], copies, [future])
                return future
        self._queued.append((request, copies, future))
        if len(self._queued) == MAX_BATCH:
            # Full: the spawner gets to work on it while we prepare the next ones.
            self._send_in_batches(self._queued)
            self._queued = []
        return future

    def _send_queued(self) -> None:
        queued, self._queued = self._queued or [], None
        if self.closed:
            _refuse(queued)
            return
        if len(self._pending) >= AHEAD:
            self._held += queued  # sent at its next answer
            return
        held, self._held = self._held, []
        self._send_in_batches(held + queued)

    def _send_in_batches(self, queued: list[tuple[SpawnRequest, list[int], Answer]]) -> None:
        batch: list[tuple[SpawnRequest, list[int], Answer]] = []
        count = 0
        for entry in queued:
            if batch and (len(batch) == MAX_BATCH or count + len(entry[1]) > MAX_FDS_PER_MESSAGE):
                self._send_batch(batch)
                batch, count = [], 0
            batch.append(entry)
            count += len(entry[1])
        if batch:
            self._send_batch(batch)

    def _send_batch(self, batch: list[tuple[SpawnRequest, list[int], Answer]]) -> None:
        requests = [request for request, _fds, _future in batch]
        self._send(requests, [fd for _request, fds, _future in batch for fd in fds],
                   [future for _request, _fds, future in batch])

    def _send(self, requests: list[SpawnRequest], fds: list[int], futures: list[Answer]) -> None:
        """One message: a lone request as itself, several as a list (a batch)."""
        if self._down:
            self._waiting.append((requests, fds, futures))
            return
        data = encode(requests[0] if len(futures) == 1 else requests)
        if len(data) > MAX_MESSAGE and len(futures) > 1:
            # Large environments: halve the batch until each half fits in one message.
            half = len(futures) // 2
            split = sum(len(r.fd_targets) for r in requests[:half])
            self._send(requests[:half], fds[:split], futures[:half])
            self._send(requests[half:], fds[split:], futures[half:])
            return
        self._outbox.append((data, fds))
        self._pending.append(futures[0] if len(futures) == 1 else futures)
        self._sent_at.append(time.clock_gettime(time.CLOCK_BOOTTIME))
        if self._deadline is None:
            self._arm_deadline()
        self._flush()

    def _flush(self) -> None:
        assert self._loop is not None
        while self._outbox:
            data, fds = self._outbox[0]
            try:
                socket.send_fds(self._sock, [data], fds)
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    self._loop.add_writer(self._sock.fileno(), self._flush)
                return
            except OSError as exc:
                self._fail(exc)
                return
            self._outbox.popleft()
            for fd in fds:
                os.close(fd)
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._sock.fileno())

    def _on_readable(self) -> None:
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(
                    self._sock, 1 << 16, MAX_FDS_PER_MESSAGE, socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                if self._held and len(self._pending) < AHEAD:
                    held, self._held = self._held, []
                    self._send_in_batches(held)
                return
            except OSError as exc:
                self._fail(exc)
                return
            if not data:
                self._fail(SpawnError(errno.EPIPE, "it closed its socket"))
                return
            reply = _pickle.loads(data)
            entry = self._pending.popleft()
            self._sent_at.popleft()
            self._answered = True
            self._arm_deadline()
            if not isinstance(entry, list):
                _answer(entry, reply, fds)
            elif isinstance(reply, list):
                for future, answer in zip(entry, reply, strict=True):
                    taken = fds[:1] if answer[0] == "ok" else []
                    fds = fds[len(taken) :]
                    _answer(future, answer, taken)
            else:  # the whole batch was refused
                for future in entry:
                    _answer(future, reply, [])

    def _fail(self, exc: Exception) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if self._start is not None and not self.closed:
            self._lost(reason)
            return
        if not self.closed:
            log.critical("the spawner (pid %d) is gone (%s): nothing can be started", self.pid,
                         reason)
        self.close()
        self._fail_pending(f"the spawner is gone: {reason}")

    def _fail_pending(self, message: str, lost: bool = False) -> None:
        """Fail the unanswered requests: SpawnerLost if another spawner follows (`lost`)."""
        kind = SpawnerLost if lost else SpawnError
        self._sent_at.clear()
        while self._pending:
            entry = self._pending.popleft()
            for future in entry if isinstance(entry, list) else [entry]:
                if not future.done():
                    future.set_exception(kind(errno.EPIPE, message))

    # -- losing the spawner, starting another ----------------------------------------------------

    def _arm_deadline(self) -> None:
        """(Re)start the wait for the next answer; none while nothing is unanswered."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._pending and self._start is not None and self._loop is not None:
            self._deadline = self._loop.call_later(self._answer_deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline = None
        if self._pending:
            self._lost(
                f"it answered nothing for {self._answer_deadline:g} s (stopped, or hung): "
                "killing it"
            )

    def _on_exit(self) -> None:
        self._fail(SpawnError(errno.EPIPE, "it exited"))

    def _lost(self, reason: str) -> None:
        """The spawner cannot serve us any more: kill it, fail what it did not answer (whether
        it cloned those children is unknown), start another one."""
        assert self._loop is not None
        if self._down:
            return
        self._down = True
        self._disconnect()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        ended = self._end_process()
        self._loss = (time.monotonic(), self._sent_at[0] if self._sent_at else None)
        self._fail_pending(f"the spawner was lost: {reason}", lost=True)
        held, self._held = self._held, []
        self._send_in_batches(held)  # to the next spawner (_waiting)
        if self._answered or time.monotonic() - self._started >= STABLE:
            self._losses = 0
        delay = self._next_delay()
        log.error(
            "lost the spawner (pid %d): %s%s; starting another one %s (the running processes "
            "go on)", self.pid, reason, ended, f"in {delay:g} s" if delay else "now",
        )
        self._restart_timer = self._loop.call_later(delay, self._restart)

    def _next_delay(self) -> float:
        self._losses += 1
        if self._losses == 1:
            return 0.0
        return min(RESTART_DELAY_MAX, RESTART_DELAY_FIRST * 2.0 ** (self._losses - 2))

    def _end_process(self) -> str:
        """Reap the lost spawner if it exited (how, for the log), else SIGKILL it (it may be
        exiting: its socket closes first): it is reaped once gone."""
        assert self._loop is not None
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is None:
            return ""
        try:
            result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            os.close(pidfd)
            return ""
        if result is not None and result.si_pid:
            os.close(pidfd)
            return f" ({_how(result)})"
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        self._retired[self.pid] = pidfd
        self._loop.add_reader(pidfd, self._reap_retired, self.pid)
        return ""

    def _reap_retired(self, pid: int) -> None:
        pidfd = self._retired.pop(pid)
        assert self._loop is not None
        self._loop.remove_reader(pidfd)
        try:
            result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        except ChildProcessError:
            result = None
        os.close(pidfd)
        if result is not None:
            log.info("the lost spawner (pid %d) is gone (%s)", pid, _how(result))

    def _restart(self) -> None:
        self._restart_timer = None
        assert self._start is not None and self._loop is not None
        if self.closed:
            return
        if self._loss is not None:
            lost_at, busy_since = self._loss
            if self._retired and time.monotonic() - lost_at < LOST_REAP_WAIT:
                # Killed, not reaped yet: wait a little, so that its last clones are listed.
                self._restart_timer = self._loop.call_later(0.02, self._restart)
                return
            self._loss = None
            # This runs a loop turn after the loss at least: the answers received before it
            # have been taken in by their callbacks (their pids are known to the caller).
            if busy_since is not None and self.after_loss is not None:
                try:
                    self.after_loss(busy_since)
                except Exception:  # the new spawner must start whatever happens
                    log.exception("dealing with the children of the lost spawner failed")
        try:
            pid, sock = self._start()
        except OSError as exc:
            delay = self._next_delay()
            log.error("cannot start a spawner: %s; trying again in %g s", exc, delay)
            self._restart_timer = self._loop.call_later(delay, self._restart)
            return
        self._take(pid, sock)
        self._down = False
        self._watch()
        log.warning("a new spawner runs, pid %d", pid)
        waiting, self._waiting = self._waiting, []
        for requests, fds, futures in waiting:
            self._send(requests, fds, futures)

    # -- the end ---------------------------------------------------------------------------------

    def close(self) -> None:
        """No more requests: our end of the socket is closed (the spawner exits on EOF)."""
        if self.closed:
            return
        self.closed = True
        for timer in (self._deadline, self._restart_timer):
            if timer is not None:
                timer.cancel()
        self._deadline = self._restart_timer = None
        if not self._down:
            self._disconnect()
        waiting, self._waiting = self._waiting, []
        for _requests, fds, futures in waiting:
            for fd in fds:
                os.close(fd)
            for future in futures:
                if not future.done():
                    future.set_exception(SpawnError(errno.EPIPE, "the spawner is gone"))
        held, self._held = self._held, []
        _refuse(held)
        for pidfd in self._take_pidfds().values():
            os.close(pidfd)

    def _take_pidfds(self) -> dict[int, int]:
        """The pidfds of every spawner not reaped, by pid, out of the event loop and ours."""
        pidfds = dict(self._retired)
        self._retired.clear()
        if self._pidfd is not None:
            pidfds[self.pid] = self._pidfd
            self._pidfd = None
        if self._loop is not None:
            for pidfd in pidfds.values():
                self._loop.remove_reader(pidfd)
        return pidfds

    def stop(self, grace: float = 1.0) -> None:
        """Close, give the spawner `grace` seconds to exit, then SIGKILL it (stopped, hung);
        reap it and any killed before. Blocks: for the very end."""
        pidfds = self._take_pidfds()
        self.close()
        deadline = time.monotonic() + grace
        for pidfd in pidfds.values():
            if not _exits_within(pidfd, deadline - time.monotonic()):
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
            os.close(pidfd)


def _refuse(requests: list[tuple[SpawnRequest, list[int], Answer]]) -> None:
    for _request, fds, future in requests:
        for fd in fds:
            os.close(fd)
        if not future.done():
            future.set_exception(SpawnError(errno.EPIPE, "the spawner is gone"))


def _exits_within(pidfd: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the process of `pidfd` to exit. poll(), not select():
    select() refuses descriptors >= FD_SETSIZE (1024), and the arbiter, which raises its
    RLIMIT_NOFILE, often holds more than that."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0, math.ceil(timeout * 1000))))


def _how(result: os.waitid_result) -> str:
    if result.si_code == os.CLD_EXITED:
        return f"exit status {result.si_status}"
    return f"killed by signal {result.si_status}"


def _answer(future: Answer, reply: Any, fds: list[int]) -> None:
    """Settle one request's future from its answer and the fds that came with it."""
    if reply[0] == "ok" and not fds:
        # The kernel could not install the exec-status fd here (EMFILE): a child we cannot
        # watch is killed. Our unreaped child: its pid cannot have been reused.
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(reply[1]), signal.SIGKILL)
        if not future.cancelled():
            future.set_exception(
                SpawnError(errno.EMFILE, "no file descriptor left to watch the process")
            )
    elif reply[0] == "ok":
        if future.cancelled():
            os.close(fds[0])
        else:
            future.set_result((int(reply[1]), fds[0]))
    else:
        for fd in fds:
            os.close(fd)
        if not future.cancelled():
            future.set_exception(SpawnError(reply[1], reply[2]))
