"""The harness's end of bench-child's socket: who exists, since when, and when each one exited.

Every bench-child connects to one SOCK_SEQPACKET socket and says "A pid ns" as soon as it runs
(ns = its own CLOCK_MONOTONIC, the clock of time.monotonic), "D pid ns" when a writer is done, and
its exit closes the connection. So processes are counted exactly, by event, without polling the
supervisor or /proc. One background thread serves the socket; the main thread waits on a
condition with a deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable


@dataclasses.dataclass
class Child:
    """One bench-child as the harness knows it; times are time.monotonic() seconds."""

    pid: int
    born: float  # the child's own clock reading, right after exec
    seen: float  # when the harness read the announcement
    conn: socket.socket
    exited: float | None = None  # when its connection closed (the process exited)
    done: float | None = None  # a writer's "finished writing" stamp


class Registry:
    """Listens at `path`; a context manager that owns its thread and every connection."""

    def __init__(self, path: str, backlog: int = 4096) -> None:
        self.path = path
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._listener.bind(path)
        self._listener.listen(backlog)
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._cond = threading.Condition()
        self._children: dict[int, Child] = {}
        self._alive = 0
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="announce", daemon=True)

    def __enter__(self) -> Registry:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving; closing the connections makes any bench-child still alive exit."""
        if self._closing:
            return
        self._closing = True
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        with self._cond:
            for child in self._children.values():
                child.conn.close()
        self._selector.close()
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    # -- queries (main thread) -------------------------------------------------------------------

    def snapshot(self) -> list[Child]:
        with self._cond:
            return [dataclasses.replace(child) for child in self._children.values()]

    def alive(self) -> list[Child]:
        return [child for child in self.snapshot() if child.exited is None]

    def alive_count(self) -> int:
        """Cheap (no copy): for loops that check often."""
        return self._alive

    def last_exit(self, pids: Iterable[int]) -> float | None:
        """When the last of `pids` exited; None while one of them is still alive."""
        with self._cond:
            times = [self._children[pid].exited for pid in pids if pid in self._children]
        if any(t is None for t in times):
            return None
        return max((t for t in times if t is not None), default=None)

    def wait(self, predicate: Callable[[list[Child]], bool], timeout: float) -> bool:
        """Wait until `predicate(children)` holds (checked on every event) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate(list(self._children.values())):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    def wait_alive(self, count: int, timeout: float) -> bool:
        return self.wait(lambda cs: sum(c.exited is None for c in cs) >= count, timeout)

    def wait_born_after(self, t0: float, count: int, timeout: float) -> list[Child] | None:
        """The first `count` children born after `t0`, by birth time; None on timeout."""
        if not self.wait(lambda cs: sum(c.born >= t0 for c in cs) >= count, timeout):
            return None
        born = sorted((c for c in self.snapshot() if c.born >= t0), key=lambda c: c.born)
        return born[:count]

    def go(self, children: Iterable[Child]) -> None:
        """Tell writers to start (bench-child blocks on this byte)."""
        for child in children:
            child.conn.send(b"g")

    # -- the serving thread ----------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._closing:
            for key, _mask in self._selector.select():
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj == self._wake_r:
                    return
                else:
                    self._read(key.fileobj, key.data)  # type: ignore[arg-type]

    def _accept(self) -> None:
        while True:
            try:
                conn, _addr = self._listener.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            self._selector.register(conn, selectors.EVENT_READ, [None])

    def _read(self, conn: socket.socket, slot: list[int | None]) -> None:
        while True:
            try:
                data = conn.recv(128)
            except BlockingIOError:
                return
            except ConnectionResetError:
                data = b""
            now = time.monotonic()
            with self._cond:
                if not data:
                    self._selector.unregister(conn)
                    conn.close()
                    if slot[0] is not None:
                        self._children[slot[0]].exited = now
                        self._alive -= 1
                    self._cond.notify_all()
                    return
                kind, pid_text, ns_text = data.decode().split()
                pid, stamp = int(pid_text), int(ns_text) / 1e9
                if kind == "A":
                    slot[0] = pid
                    # A reused pid replaces its old entry, whose exit (EOF) came first.
                    self._children[pid] = Child(pid, stamp, now, conn)
                    self._alive += 1
                elif kind == "D" and pid in self._children:
                    self._children[pid].done = stamp
                self._cond.notify_all()
