"""The children's descriptors (pidfd, exec-status pipe, sd_notify socket) watched for reading in
one epoll set of their own, which the loop watches as a single reader.

Each child holds one to three of them. Through the loop's own add_reader and remove_reader, each
costs a selector key, a handle and its bookkeeping; a mass stop of 10,000 spent a sixth of the
arbiter's time per exit there. Here a descriptor costs one epoll_ctl in and one out, and one turn
of the loop takes every ready descriptor from one epoll_wait.

Level-triggered, as the loop's readers are: what a turn leaves (more than BATCH ready) comes back
at the next. A callback may be called when nothing is ready (a number closed and reused within a
batch): each reads without blocking and returns when there is nothing.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Callable

# Descriptors handled per turn of the loop, so that timers and requests get their turn.
BATCH = 1024


class FdWatch:
    def __init__(self) -> None:
        self._epoll = select.epoll()  # close-on-exec: a re-execution starts its own
        self._callbacks: dict[int, tuple[Callable[[int], None], int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._epoll.fileno(), self._ready)

    def add(self, fd: int, callback: Callable[[int], None], argument: int) -> None:
        """Call `callback(argument)` whenever `fd` is readable, until `remove(fd)`."""
        self._epoll.register(fd, select.EPOLLIN)
        self._callbacks[fd] = (callback, argument)

    def remove(self, fd: int) -> None:
        """Stop watching `fd` (before it is closed); nothing if it is not watched."""
        if self._callbacks.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def _ready(self) -> None:
        for fd, _ in self._epoll.poll(0, BATCH):
            watched = self._callbacks.get(fd)
            if watched is None:  # removed by a callback earlier in this batch
                continue
            callback, argument = watched
            try:
                callback(argument)
            except Exception as exc:  # as the loop does for its own callbacks: report, go on
                assert self._loop is not None
                self._loop.call_exception_handler({
                    "message": f"Exception in callback {callback!r}({argument})",
                    "exception": exc,
                })

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._epoll.fileno())
        self._loop = None
        self._callbacks.clear()
        self._epoll.close()
