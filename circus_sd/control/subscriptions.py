"""The topics subscribed on our XPUB sockets (events, child output), bounded in size and number.

libzmq keeps every subscription in a trie, with no bound of its own: one connection sending
20,000 distinct subscriptions of 10 KB made the arbiter hold 505 MB. A subscription longer than
MAX_SUBSCRIPTION (the socket's ZMQ_MAXMSGSIZE) ends its connection in libzmq itself; past
MAX_TOPICS distinct topics, the user who added the most is refused (its connections to that
socket are shut down, which removes their subscriptions). An XPUB socket reports each topic's
first subscription and its last unsubscription, with the subscriber's credentials.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Collection, KeysView
from typing import Any

import zmq

log = logging.getLogger("circus_sd.control")

# A topic is `watcher.<name>.<event>`, `plugin.<name>.<event>` or `output.<name>.<stream>`.
MAX_SUBSCRIPTION = 1024
MAX_TOPICS = 1024
# Subscriptions queued per connection before libzmq stops reading it.
RECEIVE_HWM = 64
LOG_EVERY = 10.0
_SUBSCRIBE, _UNSUBSCRIBE = 1, 0


def limit_subscriptions(socket: Any) -> None:
    """Bound what a subscriber may send `socket` (an XPUB); call before binding it."""
    socket.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION)
    socket.setsockopt(zmq.RCVHWM, RECEIVE_HWM)


@dataclasses.dataclass(frozen=True)
class Offender:
    """Who is refused for adding too many topics (uid None: the tcp peers)."""

    uid: int | None


class SubscriptionBook:
    """The distinct topics subscribed, each with the user who subscribed to it first."""

    def __init__(self, limit: int = MAX_TOPICS) -> None:
        self.limit = limit
        self._first: dict[bytes, int | None] = {}

    @property
    def topics(self) -> KeysView[bytes]:
        return self._first.keys()

    def follows(self, topic: bytes) -> bool:
        """Whether a message on `topic` reaches anyone (a subscription is a prefix)."""
        return any(topic.startswith(prefix) for prefix in self._first)

    def apply(self, message: bytes, uid: int | None) -> bool:
        """Take in an (un)subscription message as XPUB passes it on; whether the topics changed."""
        if not message:
            return False
        kind, topic = message[0], bytes(message[1:])
        if kind == _SUBSCRIBE:
            if topic in self._first:
                return False
            self._first[topic] = uid
            return True
        if kind == _UNSUBSCRIBE:
            return self._first.pop(topic, _ABSENT) is not _ABSENT
        return False

    def offender(self, admins: Collection[int]) -> Offender | None:
        """Past the limit: the user (not an admin) who first subscribed to the most topics."""
        if len(self._first) <= self.limit:
            return None
        counts = Counter(
            uid for uid in self._first.values() if uid != _GONE and uid not in admins
        )
        if not counts:
            return None
        return Offender(counts.most_common(1)[0][0])

    def disown(self, uid: int | None) -> None:
        """`uid` holds no connection any more: its topics are someone else's (unknown)."""
        for topic, first in self._first.items():
            if first == uid:
                self._first[topic] = _GONE


_ABSENT = object()
# The first subscriber of a topic left; whoever still holds the topic is unknown.
_GONE = -1


def peer_credentials(frame: Any) -> tuple[int, int] | None:
    """(uid, gid) of an ipc:// peer, which libzmq reports as "Peer-Address" host:uid:gid:pid."""
    try:
        address = frame.get("Peer-Address")
    except (zmq.ZMQError, AttributeError):  # no metadata (e.g. an unsubscription at a close)
        return None
    parts = str(address).split(":")
    if len(parts) < 4:
        return None
    try:
        return int(parts[-3]), int(parts[-2])
    except ValueError:
        return None


class SubscriptionFollower:
    """Keeps a book current from the (un)subscriptions an XPUB passes on; past the book's limit,
    `refuse`s the offender's connections (which returns how many it shut down)."""

    def __init__(
        self,
        book: SubscriptionBook,
        admins: Collection[int],
        refuse: Callable[[int | None], int],
        changed: Callable[[], None] = lambda: None,
        what: str = "subscriptions",
    ) -> None:
        self.book = book
        self._admins = admins
        self._refuse = refuse
        self._changed = changed
        self._what = what
        self._logged_at = -math.inf

    def take(self, frame: Any) -> None:
        """One message received from the XPUB socket."""
        book = self.book
        credentials = peer_credentials(frame)
        if not book.apply(frame.bytes, None if credentials is None else credentials[0]):
            return
        self._changed()
        refused = 0
        offender = book.offender(self._admins)
        while offender is not None and not refused:
            refused = self._refuse(offender.uid)
            if not refused:
                book.disown(offender.uid)
                offender = book.offender(self._admins)
        if offender is None:
            return
        now = time.monotonic()
        if refused and now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            who = "the tcp peers" if offender.uid is None else f"uid {offender.uid}"
            log.warning(
                "%s: more than %d topics subscribed; refused %s (%d connection(s))",
                self._what, book.limit, who, refused,
            )


class SubscriptionReader:
    """Feeds a follower from an XPUB socket (a plain one) in the running loop: a reader callback
    on its ZMQ_FD, as the control ROUTER (server.py), not zmq.asyncio's recv (a future per call).

    ZMQ_FD is edge-triggered, and libzmq takes in subscriptions only inside our calls on the
    socket: each read goes until EAGAIN, and a send, which may consume the edge of a subscription,
    is followed by a read (after_send). `current`: no call on the socket since the last read.
    """

    def __init__(self, socket: zmq.Socket[bytes], follower: SubscriptionFollower) -> None:
        self._socket = socket
        self._follower = follower
        self._fd: int | None = None  # watched by the loop while reading
        self._pass_scheduled = False
        self.current = False

    def start(self) -> None:
        """Read from the running loop from now on (call in its thread)."""
        self._fd = self._socket.FD
        asyncio.get_running_loop().add_reader(self._fd, self.read)
        self.read()

    def stop(self) -> None:
        """Read no more (before the socket is closed)."""
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None

    def read(self) -> None:
        """Every (un)subscription the socket has, into the follower."""
        self._pass_scheduled = False
        while True:
            try:
                frame = self._socket.recv(zmq.NOBLOCK, copy=False)
            except zmq.ZMQError:  # EAGAIN: all read (or the socket is closed)
                break
            self._follower.take(frame)
        self.current = True

    def after_send(self) -> None:
        """A send on the socket happened: read on the next loop turn."""
        self.current = False
        if not self._pass_scheduled and self._fd is not None:
            self._pass_scheduled = True
            asyncio.get_running_loop().call_soon(self.read)
