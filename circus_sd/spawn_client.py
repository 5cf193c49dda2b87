"""The arbiter's handle on the spawner process (circus_sd/spawner.py): pipelined, asynchronous
spawn requests over the socketpair. Kept apart so that the spawner itself never imports asyncio
(a smaller spawner is a cheaper fork for every child)."""

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

from circus_sd.spawner import SpawnError, SpawnRequest


class Spawner:
    """The arbiter's handle on the spawner process: pipelined, asynchronous spawn requests."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self._sock = sock
        self._sock.setblocking(False)
        self._pending: collections.deque[asyncio.Future[tuple[int, int]]] = collections.deque()
        self._outbox: collections.deque[tuple[bytes, list[int]]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = False
        self.closed = False

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered: children may exist whose pid we do not know."""
        return len(self._pending)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._on_readable)

    def spawn(
        self, request: SpawnRequest, fds: Sequence[int] = ()
    ) -> asyncio.Future[tuple[int, int]]:
        """Ask for a child; the future gives (pid, exec-status fd) or raises SpawnError.

        The caller keeps ownership of `fds` and may close them once this returns.
        """
        assert self._loop is not None
        future: asyncio.Future[tuple[int, int]] = self._loop.create_future()
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
        self._outbox.append((pickle.dumps(request), copies))
        self._pending.append(future)
        self._flush()
        return future

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
                    self._sock, 65536, 4, socket.MSG_CMSG_CLOEXEC
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
            future = self._pending.popleft()
            if reply[0] == "ok" and not fds:
                # The kernel could not install the exec-status fd here (EMFILE): a child we
                # cannot watch is killed. Our unreaped child: its pid cannot have been reused.
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

    def _fail(self, exc: Exception) -> None:
        self.close()
        while self._pending:
            future = self._pending.popleft()
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
