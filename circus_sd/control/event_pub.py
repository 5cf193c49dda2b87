"""The arbiter's events on the events endpoint (ZMQ XPUB), for the topics someone subscribed to.

An event nobody follows costs a dict lookup, not a JSON encoding and a send: a stop of 10,000
processes publishes 20,000 events, which took a third of the arbiter's time when each went out.
The socket is a plain one read from a reader callback on its ZMQ_FD (SubscriptionReader, as the
control ROUTER): a send through zmq.asyncio costs a future and a loop callback, 2.5x a plain send.

Exact, not eventually right: libzmq changes what its socket knows of subscriptions only inside
our calls on it, so the book is current after a read until EAGAIN and stays so until the next
send. An event is dropped as unfollowed only by a current book: a subscriber whose subscription
reached the socket before an event gets that event, as from a socket that filters by itself.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection
from typing import Any

import zmq

from circus_sd.control.subscriptions import (
    SubscriptionBook,
    SubscriptionFollower,
    SubscriptionReader,
    limit_subscriptions,
)

# Topics remembered as followed or not; the `publish` command lets clients name topics, so bounded.
MAX_REMEMBERED = 4096


class EventPublisher:
    """Publishes events on an XPUB socket and follows who subscribes to what."""

    def __init__(
        self,
        socket: zmq.Socket[bytes],
        send_hwm: int,
        admins: Collection[int] = (),
        refuse: Callable[[int | None], int] = lambda uid: 0,
    ) -> None:
        """`refuse(uid)` shuts down a user's connections to `socket` (see subscriptions.py)."""
        self.socket = socket
        socket.linger = 0
        socket.setsockopt(zmq.SNDHWM, send_hwm)
        limit_subscriptions(socket)
        self._book = SubscriptionBook()
        # topic -> followed; emptied whenever the subscriptions change.
        self._followed: dict[str, bool] = {}
        follower = SubscriptionFollower(self._book, admins, refuse, self._followed.clear, "events")
        # reader.current: the book holds every subscription the socket took in (see above).
        self._reader = SubscriptionReader(socket, follower)

    def start(self) -> None:
        """Follow subscriptions from the running loop (call in its thread)."""
        self._reader.start()

    def stop(self) -> None:
        self._reader.stop()

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        followed = self._followed.get(topic)
        if followed is None or (not followed and not self._reader.current):
            self._reader.read()
            followed = self._book.follows(topic.encode())
            if len(self._followed) >= MAX_REMEMBERED:
                self._followed.clear()
            self._followed[topic] = followed
        if not followed:
            return
        # XPUB never blocks: past the high-water mark a slow subscriber loses messages, not us.
        with contextlib.suppress(zmq.ZMQError):
            self.socket.send_multipart(
                [topic.encode(), json.dumps(payload).encode()], flags=zmq.NOBLOCK
            )
        # The send may have taken in subscriptions, and the edge of ZMQ_FD with them.
        self._reader.after_send()

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(zmq.ZMQError):
            self.socket.close(linger=100)
