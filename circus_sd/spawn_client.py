"""The arbiter's handle on the spawner process (circus_sd/spawn_server.py): pipelined, batched,
asynchronous spawn requests over the socketpair."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import os
import pickle
import signal
import socket
from collections.abc import Sequence
from typing import Any

from circus_sd.spawner import MAX_FDS_PER_MESSAGE, MAX_MESSAGE, SpawnError, SpawnRequest

# Requests in one batch: big enough to spare the spawner a message (and its Python work) per
# child, small enough that the arbiter hears of the first children while later ones are cloned.
MAX_BATCH = 32

Answer = asyncio.Future[tuple[int, int]]


class Spawner:
    """The arbiter's handle on the spawner process: pipelined, asynchronous spawn requests.

    The first request of a loop turn is sent at once; those that follow in the same turn (a
    watcher starting N processes) go in batches of MAX_BATCH, the last one at the end of the turn.
    """

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self._sock = sock
        self._sock.setblocking(False)
        # One entry per message sent: its future, or the futures of a batch.
        self._pending: collections.deque[Answer | list[Answer]] = collections.deque()
        self._outbox: collections.deque[tuple[bytes, list[int]]] = collections.deque()
        # Requests of this loop turn after its first (None: none sent this turn yet).
        self._queued: list[tuple[SpawnRequest, list[int], Answer]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = False
        self.closed = False

    @property
    def in_flight(self) -> int:
        """Requests not yet answered: children may exist whose pid we do not know."""
        sent = sum(len(entry) if isinstance(entry, list) else 1 for entry in self._pending)
        return sent + len(self._queued or ())

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._on_readable)

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
            self._send([request], copies, [future])
        else:
            self._queued.append((request, copies, future))
            if len(self._queued) == MAX_BATCH:
                # Full: the spawner gets to work on it while we prepare the next ones.
                self._send_in_batches(self._queued)
                self._queued = []
        return future

    def _send_queued(self) -> None:
        queued, self._queued = self._queued or [], None
        if self.closed:
            for _request, fds, future in queued:
                for fd in fds:
                    os.close(fd)
                future.set_exception(SpawnError(errno.EPIPE, "the spawner is gone"))
            return
        self._send_in_batches(queued)

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
        data = pickle.dumps(requests[0] if len(futures) == 1 else requests)
        if len(data) > MAX_MESSAGE and len(futures) > 1:
            # Large environments: halve the batch until each half fits in one message.
            half = len(futures) // 2
            split = sum(len(r.fd_targets) for r in requests[:half])
            self._send(requests[:half], fds[:split], futures[:half])
            self._send(requests[half:], fds[split:], futures[half:])
            return
        self._outbox.append((data, fds))
        self._pending.append(futures[0] if len(futures) == 1 else futures)
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
                return
            except OSError as exc:
                self._fail(exc)
                return
            if not data:
                self._fail(SpawnError(errno.EPIPE, "the spawner exited"))
                return
            reply = pickle.loads(data)
            entry = self._pending.popleft()
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
        self.close()
        while self._pending:
            entry = self._pending.popleft()
            for future in entry if isinstance(entry, list) else [entry]:
                if not future.done():
                    future.set_exception(SpawnError(errno.EPIPE, f"the spawner is gone: {exc}"))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            if self._writing:
                self._loop.remove_writer(self._sock.fileno())
        for _data, fds in self._outbox:
            for fd in fds:
                os.close(fd)
        self._outbox.clear()
        self._sock.close()


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
