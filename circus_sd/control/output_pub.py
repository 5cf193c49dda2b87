"""Child output on a ZMQ socket of its own (`output_endpoint`), followed by `circusctl tail`.

Not the events socket: a flood of output must never make ZMQ drop lifecycle events. An XPUB
socket, because it tells us which topics have subscribers: output nobody follows costs one dict
lookup per read, not a copy and a send. Each message is three frames: the topic
`output.<watcher>.<stream>`, a JSON header (watcher, wid, pid, stream) and the whole lines read.
A subscriber that cannot keep up loses messages past the high-water mark; the arbiter never
waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import zmq
import zmq.asyncio

from circus_sd.endpoints import output_topic
from circus_sd.output.lines import Buffer
from circus_sd.output.sink import Origin

log = logging.getLogger("circus_sd")

# Messages queued per subscriber (each up to one read, 256 KiB): bounds a slow follower's cost.
SEND_HWM = 64
_SUBSCRIBE, _UNSUBSCRIBE = 1, 0


class OutputPublisher:
    """Publishes the lines the output readers see, for the topics someone subscribed to."""

    def __init__(self, socket: zmq.asyncio.Socket) -> None:
        self._socket = socket
        socket.setsockopt(zmq.SNDHWM, SEND_HWM)
        # XPUB passes on each topic's first subscription and its last unsubscription only, so
        # this is exactly the set of topics someone follows.
        self._subscriptions: set[bytes] = set()
        # (watcher, stream) -> its topic if followed, else None; emptied when subscriptions change.
        self._followed: dict[tuple[str, str], bytes | None] = {}

    def tap(self, origin: Origin, lines: list[Buffer]) -> None:
        """An output tap (see OutputRouter.taps): called in the loop with every block of lines."""
        key = (origin.watcher, origin.stream)
        try:
            topic = self._followed[key]
        except KeyError:
            topic = self._followed[key] = self._topic_if_followed(*key)
        if topic is None:
            return
        header = {
            "watcher": origin.watcher,
            "wid": origin.wid,
            "pid": origin.pid,
            "stream": origin.stream,
        }
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        sent = self._socket.send_multipart(
            [topic, json.dumps(header).encode(), data], flags=zmq.NOBLOCK, copy=True
        )
        # Done at once (XPUB drops past the high-water mark rather than fail); a closed socket
        # fails: fetch the outcome so that asyncio does not report it as never retrieved.
        if isinstance(sent, asyncio.Future) and sent.done() and not sent.cancelled():
            sent.exception()

    def _topic_if_followed(self, watcher: str, stream: str) -> bytes | None:
        topic = output_topic(watcher, stream).encode()
        if any(topic.startswith(prefix) for prefix in self._subscriptions):
            return topic
        return None

    async def follow_subscriptions(self) -> None:
        """Keep the set of followed topics current, until cancelled."""
        while True:
            message = await self._socket.recv()
            if not message:
                continue
            kind, topic = message[0], bytes(message[1:])
            if kind == _SUBSCRIBE:
                self._subscriptions.add(topic)
            elif kind == _UNSUBSCRIBE:
                self._subscriptions.discard(topic)
            else:
                continue
            self._followed.clear()
            log.debug("output subscriptions: %s", sorted(self._subscriptions))

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._socket.close(linger=0)
