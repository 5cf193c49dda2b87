"""Replies on their way to each client, bounded: what a client that never reads can make us hold.

The ROUTER socket queues at most SEND_HWM replies per connection (ZMQ_SNDHWM), and says so
(ZMQ_ROUTER_MANDATORY: EAGAIN) rather than drop one silently: a client that sent several
requests at once gets every reply, held here until its queue has room again. What is held here
is bounded too, per client: PENDING_BYTES (or one reply, however large); past that a reply is
dropped, as libzmq would. Without these bounds a client that sent `status` requests and never
read made the arbiter grow by 1.8 GB, a gigabyte of which it kept after the client left.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable

# Replies queued in libzmq per connection.
SEND_HWM = 4
# Replies held here per client beyond those, in bytes.
PENDING_BYTES = 1 << 20


class Sent(enum.Enum):
    """What became of a reply handed to the socket."""

    SENT = "sent"
    FULL = "the client's queue is full"
    GONE = "the client is gone"


class PendingReplies:
    """Per client (ROUTER identity): the replies its full queue could not take yet, in order."""

    def __init__(
        self, send: Callable[[list[bytes]], Sent], limit: int = PENDING_BYTES
    ) -> None:
        self._send = send
        self._limit = limit
        self._held: dict[bytes, deque[list[bytes]]] = {}
        self._bytes: dict[bytes, int] = {}
        self.dropped = 0

    def __len__(self) -> int:
        """Clients with replies held."""
        return len(self._held)

    def send(self, frames: list[bytes]) -> None:
        """Send a reply (`frames[0]` is the client's identity), or hold it, or drop it."""
        identity = frames[0]
        if identity not in self._held:
            if self._send(frames) is not Sent.FULL:
                return
            self._held[identity] = deque()
            self._bytes[identity] = 0
        size = sum(len(frame) for frame in frames)
        if self._held[identity] and self._bytes[identity] + size > self._limit:
            self.dropped += 1
            return
        self._held[identity].append(frames)
        self._bytes[identity] += size

    def flush(self) -> None:
        """Send what the clients' queues take now; forget the clients that are gone."""
        for identity in list(self._held):
            held = self._held[identity]
            while held:
                outcome = self._send(held[0])
                if outcome is Sent.FULL:
                    break
                frames = held.popleft()
                self._bytes[identity] -= sum(len(frame) for frame in frames)
                if outcome is Sent.GONE:
                    self.dropped += len(held) + 1
                    held.clear()
            if not held:
                del self._held[identity]
                del self._bytes[identity]
