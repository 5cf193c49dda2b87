"""Talk to a running arbiter over Circus's ZMQ protocol: calls, casts and event subscriptions.

`CircusClient` (blocking) and `AsyncCircusClient` (asyncio) send one JSON frame per request from
a DEALER socket and wait for the reply carrying the same id, exactly as Circus's own client does,
so they work against circus-sd and against Circus 0.19 alike. pyzmq is imported on first use:
`circusctl status` pays for nothing it does not need.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from circus_sd import endpoints
from circus_sd.curve import apply_client_keys_from_env

if TYPE_CHECKING:
    import zmq
    import zmq.asyncio

DEFAULT_TIMEOUT = 5.0
ENDPOINT_ENV = "CIRCUSCTL_ENDPOINT"


class CallError(Exception):
    """The request could not be made or got no reply in time (an error *reply* is not one)."""


def resolve_endpoint(endpoint: str | None) -> str:
    """The endpoint to use: the one given, else $CIRCUSCTL_ENDPOINT, else the default ipc socket."""
    return endpoint or os.environ.get(ENDPOINT_ENV) or endpoints.client_default_endpoint()


def new_request_id() -> str:
    """A uuid4 in hex, as Circus uses for ids and identities (without importing uuid)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def build_request(
    command: str, properties: dict[str, Any], *, cast: bool = False
) -> tuple[str, bytes]:
    """(id, the one JSON frame) of a request."""
    request_id = new_request_id()
    message: dict[str, Any] = {"id": request_id, "command": command, "properties": properties}
    if cast:
        message["msg_type"] = "cast"
    return request_id, json.dumps(message).encode()


def request_of(
    command: str | Mapping[str, Any], properties: dict[str, Any]
) -> tuple[str, dict[str, Any], bool]:
    """(command, properties, cast?) of a call made either way: circus-sd's
    `call("incr", name="web")` or Circus's `call({"command": "incr", "properties": {...}})`
    (what `circus.client.make_message` and `cast_message` build)."""
    if isinstance(command, str):
        return command, properties, False
    if not isinstance(command, Mapping):
        raise TypeError(f"a command name or a Circus message, not {type(command).__name__}")
    if properties:
        raise TypeError("a Circus message carries its properties: give no keyword arguments")
    name = command.get("command")
    props = command.get("properties") or {}
    if not isinstance(name, str) or not isinstance(props, Mapping):
        raise TypeError('a Circus message is {"command": str, "properties": {...}}')
    return name, dict(props), command.get("msg_type") == "cast"


def check_ipc_endpoint(endpoint: str, what: str = "control") -> None:
    """Fail fast, with the reason, when an ipc socket is missing or not ours to use.

    ZMQ would silently wait for the file to appear and the user would only see a time-out.
    """
    path = endpoints.ipc_path(endpoint)
    if path is None:
        return
    problem = endpoints.runtime_dir_problem(path)
    if problem is not None:  # another user's socket, maybe: it would read what we send
        raise CallError(f"not using {path}: {problem}")
    if not os.path.exists(path):
        raise CallError(
            f"no {what} socket at {path}: the arbiter is not running, or the endpoint is "
            f"wrong (give --endpoint or set ${ENDPOINT_ENV})"
        )
    if not os.access(path, os.R_OK | os.W_OK):
        raise CallError(
            f"permission denied on {path}: only root, the arbiter's user and members of its "
            f"endpoint_group may use it"
        )


def _timeout_error(endpoint: str, timeout: float) -> CallError:
    return CallError(
        f"timed out after {timeout:g}s waiting for a reply from {endpoint}: the arbiter is not "
        f"answering there (not running, or the endpoint is wrong), or the operation takes longer "
        f"(raise --timeout, notably with --waiting)"
    )


def _decode_reply(frames: list[bytes]) -> dict[str, Any] | None:
    """The reply in the last frame, or None when it is not a JSON object (ignored, as Circus)."""
    try:
        reply = json.loads(frames[-1])
    except (ValueError, UnicodeDecodeError, IndexError):
        return None
    return reply if isinstance(reply, dict) else None


class _ClientBase:
    """What both clients share: the endpoint, the DEALER socket's set-up and its closing."""

    def __init__(self, endpoint: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.endpoint = resolve_endpoint(endpoint)
        self.timeout = timeout
        self._context: zmq.Context[Any] | None = None
        self._socket: zmq.Socket[Any] | None = None
        # A cast is fire-and-forget: closing must give it time to leave the socket.
        self._cast_pending = False

    def _new_context(self) -> zmq.Context[Any]:
        raise NotImplementedError

    def _dealer(self) -> zmq.Socket[Any]:
        """The connected DEALER socket, made on first use."""
        if self._socket is None:
            check_ipc_endpoint(self.endpoint)
            import zmq

            self._context = self._new_context()
            self._socket = self._context.socket(zmq.DEALER)
            self._socket.setsockopt(zmq.IDENTITY, new_request_id().encode())
            self._socket.setsockopt(zmq.LINGER, 0)
            apply_client_keys_from_env(self._socket, self.endpoint)
            self._socket.connect(self.endpoint)
        return self._socket

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=int(self.timeout * 1000) if self._cast_pending else 0)
            self._socket = None
        if self._context is not None:
            self._context.term()
            self._context = None


class CircusClient(_ClientBase):
    """A blocking client: `call()` returns the reply dict, `cast()` returns at once."""

    def _new_context(self) -> zmq.Context[Any]:
        import zmq

        return zmq.Context()

    def call(self, command: str | Mapping[str, Any], **properties: Any) -> dict[str, Any]:
        """Send a command and return its reply (`status` "ok" or "error"); CallError if none.

        `command` is a name with its properties as keywords, or Circus's message dict."""
        name, properties, cast = request_of(command, properties)
        if cast:
            raise CallError(f"{name}: a cast gets no reply; send it with cast()")
        socket = self._dealer()
        request_id, request = build_request(name, properties)
        deadline = time.monotonic() + self.timeout
        socket.send(request)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timeout_error(self.endpoint, self.timeout)
            if not socket.poll(math.ceil(remaining * 1000)):
                continue  # the deadline decides, not a poll that may wake up early
            reply = _decode_reply(socket.recv_multipart())
            # A late reply to an earlier, timed-out call has another id: skip it.
            if reply is not None and reply.get("id") == request_id:
                return reply

    def cast(self, command: str | Mapping[str, Any], **properties: Any) -> None:
        """Send a command without waiting for (or getting) a reply."""
        name, properties, _cast = request_of(command, properties)
        self._dealer().send(build_request(name, properties, cast=True)[1])
        self._cast_pending = True

    def send_message(self, command: str, **properties: Any) -> dict[str, Any]:
        """Circus's name for `call(command, **properties)`."""
        return self.call(command, **properties)

    def stop(self) -> None:
        """Circus's name for `close()`."""
        self.close()

    def __enter__(self) -> CircusClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncCircusClient(_ClientBase):
    """The asyncio twin of CircusClient: `await client.call(...)`."""

    def _new_context(self) -> zmq.Context[Any]:
        import zmq.asyncio

        return zmq.asyncio.Context()

    def _async_dealer(self) -> zmq.asyncio.Socket:
        import zmq.asyncio

        socket = self._dealer()
        assert isinstance(socket, zmq.asyncio.Socket)
        return socket

    async def call(self, command: str | Mapping[str, Any], **properties: Any) -> dict[str, Any]:
        name, properties, cast = request_of(command, properties)
        if cast:
            raise CallError(f"{name}: a cast gets no reply; send it with cast()")
        socket = self._async_dealer()
        request_id, request = build_request(name, properties)
        deadline = time.monotonic() + self.timeout
        await socket.send(request)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timeout_error(self.endpoint, self.timeout)
            if not await socket.poll(math.ceil(remaining * 1000)):
                continue
            reply = _decode_reply(await socket.recv_multipart())
            if reply is not None and reply.get("id") == request_id:
                return reply

    async def cast(self, command: str | Mapping[str, Any], **properties: Any) -> None:
        name, properties, _cast = request_of(command, properties)
        await self._async_dealer().send(build_request(name, properties, cast=True)[1])
        self._cast_pending = True

    async def send_message(self, command: str, **properties: Any) -> dict[str, Any]:
        return await self.call(command, **properties)

    def stop(self) -> None:
        self.close()

    async def __aenter__(self) -> AsyncCircusClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


def decode_event(frames: list[bytes]) -> tuple[str, dict[str, Any]]:
    """`[topic, json]` from the PUB socket as (topic, payload); a non-object body is wrapped."""
    topic = frames[0].decode(errors="replace") if frames else ""
    body = frames[-1] if len(frames) > 1 else b""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return topic, {"raw": body.decode(errors="replace")}
    return topic, payload if isinstance(payload, dict) else {"data": payload}


def subscribe(
    pubsub_endpoint: str, topics: Iterable[str] = ()
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Events from the arbiter's PUB socket, forever, as (topic, payload).

    Topics are prefixes (ZMQ semantics): `watcher.web.` gets every event of `web`; none = all.
    Closing the generator closes the socket.
    """
    check_ipc_endpoint(pubsub_endpoint, what="events")
    with _subscribed(pubsub_endpoint, [t.encode() for t in topics] or [b""]) as socket:
        while True:
            yield decode_event(socket.recv_multipart())


@contextlib.contextmanager
def _subscribed(endpoint: str, topics: list[bytes]) -> Iterator[zmq.Socket[bytes]]:
    """A SUB socket connected to `endpoint` (CURVE keys from the environment) for `topics`."""
    import zmq

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socket = context.socket(zmq.SUB)
    try:
        socket.setsockopt(zmq.LINGER, 0)
        apply_client_keys_from_env(socket, endpoint)
        socket.connect(endpoint)
        for topic in topics:
            socket.setsockopt(zmq.SUBSCRIBE, topic)
        yield socket
    finally:
        socket.close(linger=0)
        context.term()


class OutputBlock(NamedTuple):
    """Whole lines a process wrote, as published on the arbiter's `output_endpoint`."""

    watcher: str
    wid: int
    pid: int
    stream: str  # "stdout" or "stderr"
    data: bytes
    # Blocks of this watcher and stream the arbiter published since the one before this, but
    # dropped for this follower (it did not keep up): they are numbered (`seq`).
    lost: int = 0


def follow_output(
    output_endpoint: str, watcher: str, stream: str | None = None
) -> Iterator[OutputBlock]:
    """A watcher's output (one stream, or both), live, forever; what came before is not kept.

    Blocks are whole lines, in order per process and stream. A follower slower than the output
    loses blocks (the arbiter never waits for it), counted in the next block's `lost`.
    Closing the generator closes the socket.
    """
    check_ipc_endpoint(output_endpoint, what="output")
    topic = endpoints.output_topic(watcher, stream).encode()
    last: dict[bytes, int] = {}  # topic -> the number of the last block seen
    with _subscribed(output_endpoint, [topic]) as socket:
        while True:
            frames = socket.recv_multipart()
            if len(frames) != 3:
                continue
            try:
                header = json.loads(frames[1])
                seq = header.get("seq")
                lost = 0
                if isinstance(seq, int):
                    lost = max(0, seq - last.get(frames[0], seq - 1) - 1)
                    last[frames[0]] = seq
                block = OutputBlock(
                    header["watcher"], header["wid"], header["pid"], header["stream"], frames[2],
                    lost,
                )
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            # The topic is a prefix: `output.web.` also matches a watcher named `web.x`.
            if block.watcher == watcher:
                yield block


class AsyncSubscription:
    """The asyncio twin of `subscribe`: `await receive()` the next (topic, payload).

    Connects at once, so that events published while the caller sets up are not missed
    (beyond ZMQ's usual: a SUB socket sees nothing before its connection is made).
    """

    def __init__(self, pubsub_endpoint: str, topics: Iterable[str] = ()) -> None:
        check_ipc_endpoint(pubsub_endpoint, what="events")
        import zmq
        import zmq.asyncio

        self._context = zmq.asyncio.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(pubsub_endpoint)
        for topic in list(topics) or [""]:
            self._socket.setsockopt(zmq.SUBSCRIBE, topic.encode())

    async def receive(self) -> tuple[str, dict[str, Any]]:
        return decode_event(await self._socket.recv_multipart())

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()
