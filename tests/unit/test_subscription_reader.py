"""SubscriptionReader: an XPUB's subscriptions read from the loop, including one that a send took
in (libzmq's ZMQ_FD is edge-triggered, and a send may consume the edge)."""

from __future__ import annotations

import asyncio
import contextlib
import select
import time
import uuid
from collections.abc import Iterator
from typing import Any

import zmq

from circus_sd.control.subscriptions import (
    SubscriptionBook,
    SubscriptionFollower,
    SubscriptionReader,
)


def readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


async def wait_for(predicate: Any, what: str, timeout: float = 5.0) -> None:
    """Let the loop run until `predicate()`, within `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


@contextlib.contextmanager
def xpub_and_sub() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes], str]]:
    """A bound XPUB, a SUB not yet connected to it, and the address; all closed after."""
    context: zmq.Context[Any] = zmq.Context()
    address = f"inproc://xpub-{uuid.uuid4().hex}"
    xpub = context.socket(zmq.XPUB)
    sub = context.socket(zmq.SUB)
    try:
        xpub.bind(address)
        yield xpub, sub, address
    finally:
        sub.close(linger=0)
        xpub.close(linger=0)
        context.term()


async def subscription_taken_in_by_a_send() -> None:
    with xpub_and_sub() as (xpub, sub, address):
        book = SubscriptionBook()
        reader = SubscriptionReader(xpub, SubscriptionFollower(book, (), lambda uid: 0))
        reader.start()
        assert reader.current is True
        # The loop is held from here: a subscription arrives, signalled on ZMQ_FD...
        sub.connect(address)
        sub.subscribe(b"topic")
        assert readable(xpub.FD, 5.0), "no signal of the subscription"
        # ...and sends take it in (libzmq looks at its commands in a send, now and then), so the
        # descriptor is no longer readable: the loop will not call the reader for it.
        deadline = time.monotonic() + 5.0
        while readable(xpub.FD, 0):
            assert time.monotonic() < deadline, "no send took in the subscription"
            xpub.send_multipart([b"other", b"x"], flags=zmq.NOBLOCK)
            reader.after_send()
        assert (reader.current, set(book.topics)) == (False, set())
        await wait_for(lambda: b"topic" in book.topics, "the subscription in the book")
        assert reader.current
        reader.stop()


def test_a_subscription_a_send_took_in_is_read_on_the_next_loop_turn() -> None:
    asyncio.run(subscription_taken_in_by_a_send())


def test_read_without_the_loop_follows_what_the_socket_has() -> None:
    with xpub_and_sub() as (xpub, sub, address):
        book = SubscriptionBook()
        changes: list[None] = []
        reader = SubscriptionReader(
            xpub, SubscriptionFollower(book, (), lambda uid: 0, lambda: changes.append(None))
        )
        assert reader.current is False
        sub.connect(address)
        sub.subscribe(b"a")
        sub.subscribe(b"b")
        deadline = time.monotonic() + 5.0
        while set(book.topics) != {b"a", b"b"}:
            assert time.monotonic() < deadline, book.topics
            assert readable(xpub.FD, 5.0)
            reader.read()
        assert (reader.current, len(changes)) == (True, 2)
        sub.unsubscribe(b"a")
        while set(book.topics) != {b"b"}:
            assert time.monotonic() < deadline, book.topics
            assert readable(xpub.FD, 5.0)
            reader.read()
        assert len(changes) == 3
