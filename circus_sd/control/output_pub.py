"""Child output on a ZMQ socket of its own (`output_endpoint`), followed by `circusctl tail`.

Not the events socket: a flood of output must never make ZMQ drop lifecycle events. An XPUB
socket, because it tells us which topics have subscribers: output nobody follows costs one dict
lookup per read, not a copy and a send. Each message is three frames: the topic
`output.<watcher>.<stream>`, a JSON header (watcher, wid, pid, stream, seq) and the whole lines
read. A subscriber that cannot keep up loses messages past the high-water mark (SEND_HWM
messages of at most one read each: about 2 MiB per follower); the arbiter never waits for it.
`seq` numbers the messages of each topic, so that a follower counts what it lost. The socket is
a plain one, its subscriptions read from the loop as the events socket's (SubscriptionReader).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection

import zmq

from circus_sd.control.subscriptions import (
    SubscriptionBook,
    SubscriptionFollower,
    SubscriptionReader,
    limit_subscriptions,
)
from circus_sd.endpoints import output_topic
from circus_sd.output.lines import Buffer
from circus_sd.output.sink import Origin

# Messages queued per subscriber (each up to one read, 256 KiB): bounds a slow follower's cost.
SEND_HWM = 8


class OutputPublisher:
    """Publishes the lines the output readers see, for the topics someone subscribed to."""

    def __init__(
        self,
        socket: zmq.Socket[bytes],
        admins: Collection[int] = (),
        refuse: Callable[[int | None], int] = lambda uid: 0,
    ) -> None:
        """`refuse(uid)` shuts down a user's connections to `socket` (see subscriptions.py)."""
        self._socket = socket
        socket.setsockopt(zmq.SNDHWM, SEND_HWM)
        limit_subscriptions(socket)
        # XPUB passes on each topic's first subscription and its last unsubscription only, so
        # this is exactly the set of topics someone follows.
        self._book = SubscriptionBook()
        # (watcher, stream) -> its topic if followed, else None; emptied when subscriptions change.
        self._followed: dict[tuple[str, str], bytes | None] = {}
        # Messages published per topic, the last one's number.
        self._sequence: dict[bytes, int] = {}
        follower = SubscriptionFollower(self._book, admins, refuse, self._followed.clear, "output")
        self._reader = SubscriptionReader(socket, follower)

    def start(self) -> None:
        """Follow subscriptions from the running loop (call in its thread)."""
        self._reader.start()

    def stop(self) -> None:
        self._reader.stop()

    def tap(self, origin: Origin, lines: list[Buffer]) -> None:
        """An output tap (see OutputRouter.taps): called in the loop with every block of lines."""
        key = (origin.watcher, origin.stream)
        try:
            topic = self._followed[key]
        except KeyError:
            topic = self._followed[key] = self._topic_if_followed(*key)
        if topic is None:
            return
        seq = self._sequence[topic] = self._sequence.get(topic, 0) + 1
        header = {
            "watcher": origin.watcher,
            "wid": origin.wid,
            "pid": origin.pid,
            "stream": origin.stream,
            "seq": seq,
        }
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        # XPUB drops past the high-water mark rather than fail; a closed socket fails.
        with contextlib.suppress(zmq.ZMQError):
            self._socket.send_multipart(
                [topic, json.dumps(header).encode(), data], flags=zmq.NOBLOCK
            )
        # The send may have taken in subscriptions, and the edge of ZMQ_FD with them.
        self._reader.after_send()

    def _topic_if_followed(self, watcher: str, stream: str) -> bytes | None:
        topic = output_topic(watcher, stream).encode()
        return topic if self._book.follows(topic) else None

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(zmq.ZMQError):
            self._socket.close(linger=0)
