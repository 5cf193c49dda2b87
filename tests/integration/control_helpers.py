"""Test-side clients of the control protocol: plain pyzmq DEALER/REQ/SUB sockets, with deadlines.

Deliberately independent of `circus_sd.client`: these speak the wire protocol of
`circus-compat.md` sections 1-4 by hand, so that they test the server, not a shared library.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import zmq
from arbiter_harness import Arbiter, Circus, WaitTimeout, report_command, wait_until

REPLY_DEADLINE = 5.0


def control_endpoint(directory: Path) -> str:
    """The control endpoint `Circus.write_config` gives a config in `directory`."""
    return f"ipc://{directory}/control.sock"


def events_endpoint(directory: Path) -> str:
    return f"ipc://{directory}/events.sock"


class ControlClient:
    """One client socket (DEALER by default, as Circus's); matches replies by id."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, kind: int = zmq.DEALER) -> None:
        self.socket: zmq.Socket[bytes] = context.socket(kind)
        self.socket.linger = 0
        if kind == zmq.DEALER:
            self.socket.identity = uuid.uuid4().hex.encode()
        self.socket.connect(endpoint)

    def send(self, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.socket.send(data)

    def receive(self, timeout: float = REPLY_DEADLINE) -> dict[str, Any]:
        """The next reply; fails if none arrives within `timeout`."""
        if not self.socket.poll(int(timeout * 1000)):
            raise WaitTimeout(f"no reply within {timeout:g} s")
        reply = json.loads(self.socket.recv())
        assert isinstance(reply, dict), f"a reply must be a JSON object, got {reply!r}"
        return reply

    def request(
        self,
        command: str,
        timeout: float = REPLY_DEADLINE,
        cast: bool = False,
        **properties: Any,
    ) -> dict[str, Any]:
        """Send `command` with `properties`; its reply (replies to other ids are skipped)."""
        request_id = uuid.uuid4().hex
        message: dict[str, Any] = {"id": request_id, "command": command, "properties": properties}
        if cast:
            message["msg_type"] = "cast"
        self.send(message)
        if cast:
            return {}
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"no reply to {command} {properties} within {timeout:g} s")
            reply = self.receive(left)
            if reply.get("id") == request_id:
                return reply

    def ok(
        self, command: str, timeout: float = REPLY_DEADLINE, **properties: Any
    ) -> dict[str, Any]:
        """`request`, asserting a well-formed success reply."""
        reply = self.request(command, timeout, **properties)
        assert reply["status"] != "error", f"{command} {properties} failed: {reply}"
        assert isinstance(reply["time"], float)
        return reply

    def error(
        self, command: str, errno: int, timeout: float = REPLY_DEADLINE, **properties: Any
    ) -> str:
        """`request`, asserting an error reply with `errno`; its reason."""
        reply = self.request(command, timeout, **properties)
        assert reply["status"] == "error", f"{command} {properties} should fail: {reply}"
        assert reply["errno"] == errno, reply
        assert isinstance(reply["reason"], str) and reply["reason"], reply
        assert isinstance(reply["time"], float)
        return str(reply["reason"])

    def silent(self, duration: float) -> None:
        """Assert that no reply at all arrives for `duration` seconds."""
        if self.socket.poll(int(duration * 1000)):
            raise AssertionError(f"unexpected reply: {self.socket.recv()!r}")

    def close(self) -> None:
        self.socket.close(linger=0)


class EventStream:
    """A SUB socket on the events endpoint that keeps every (topic, payload) it received."""

    def __init__(
        self, context: zmq.Context[Any], endpoint: str, topics: tuple[str, ...] = ("",)
    ) -> None:
        self.socket: zmq.Socket[bytes] = context.socket(zmq.SUB)
        self.socket.linger = 0
        for topic in topics:
            self.socket.subscribe(topic.encode())
        self.socket.connect(endpoint)
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def _pump(self, timeout: float) -> bool:
        if not self.socket.poll(int(timeout * 1000)):
            return False
        frames = self.socket.recv_multipart()
        assert len(frames) == 2, f"an event is [topic, json], got {frames!r}"
        payload = json.loads(frames[1])
        assert isinstance(payload, dict) and isinstance(payload["time"], float), payload
        self.seen.append((frames[0].decode(), payload))
        return True

    def wait(
        self,
        topic: str,
        matches: Callable[[dict[str, Any]], bool] = lambda payload: True,
        timeout: float = 5.0,
        start: int = 0,
    ) -> dict[str, Any]:
        """The first event on `topic` (from index `start` of `seen`) whose payload `matches`."""
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.seen):
                got_topic, payload = self.seen[index]
                index += 1
                if got_topic == topic and matches(payload):
                    return payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(
                    f"no {topic} event within {timeout:g} s; got {self.topics(start)}"
                )
            self._pump(left)

    def topics(self, start: int = 0) -> list[str]:
        return [topic for topic, _payload in self.seen[start:]]

    def drain(self, duration: float = 0.0) -> None:
        """Take in what arrives for `duration` seconds (what is queued, if 0)."""
        deadline = time.monotonic() + duration
        while self._pump(max(0.0, deadline - time.monotonic())):
            pass

    def sync(self, control: ControlClient, watcher: str, timeout: float = 5.0) -> int:
        """Make sure the subscription is live (ZMQ drops what a SUB misses while it connects).

        Re-applies a live option unchanged (`set`: an `updated` event, no other effect) until its
        event arrives; returns the index in `seen` from which the test's own events start.
        """
        deadline = time.monotonic() + timeout
        value = control.ok("get", name=watcher, keys=["graceful_timeout"])["options"]
        topic = f"watcher.{watcher}.updated"
        while True:
            control.ok("set", name=watcher, options=value, waiting=True)
            mark = len(self.seen)
            try:
                self.wait(topic, timeout=0.2, start=mark)
            except WaitTimeout:
                if time.monotonic() > deadline:
                    raise
                continue
            return len(self.seen)

    def close(self) -> None:
        self.socket.close(linger=0)


class Clients:
    """Owns a ZMQ context and every socket a test opened; closes them all at the end."""

    def __init__(self) -> None:
        self.context: zmq.Context[Any] = zmq.Context()
        self._open: list[ControlClient | EventStream] = []

    def control(self, endpoint: str, kind: int = zmq.DEALER) -> ControlClient:
        client = ControlClient(self.context, endpoint, kind)
        self._open.append(client)
        return client

    def events(self, endpoint: str, topics: tuple[str, ...] = ("",)) -> EventStream:
        """A subscriber to `topics` (prefixes; "" is every event)."""
        stream = EventStream(self.context, endpoint, topics)
        self._open.append(stream)
        return stream

    def close(self) -> None:
        for item in self._open:
            item.close()
        self._open.clear()
        self.context.term()


def clients() -> Iterator[Clients]:
    """Body of each test module's `zmq_clients` fixture."""
    opened = Clients()
    try:
        yield opened
    finally:
        opened.close()


def real_pids(arbiter: Arbiter, name: str) -> list[int]:
    """Pids of the arbiter's live children started for watcher `name` (`report_command` et al.).

    A child's command line names its watcher as a word of its own; this is the kernel's view,
    to compare with what the arbiter says.
    """
    found = []
    for process in arbiter.workers():
        with contextlib.suppress(psutil.Error):
            if name in process.cmdline()[1:]:
                found.append(process.pid)
    return sorted(found)


def wait_count(arbiter: Arbiter, name: str, n: int, timeout: float = 5.0) -> list[int]:
    """Wait until watcher `name` has exactly `n` live (exec'd) processes; their pids."""
    wait_until(
        lambda: len(real_pids(arbiter, name)) == n,
        timeout,
        f"{n} live process(es) of {name}",
        lambda: f"now {real_pids(arbiter, name)}\n{arbiter.log_tail()}",
    )
    return real_pids(arbiter, name)


def watcher_sections(circus: Circus, watchers: dict[str, dict[str, Any]]) -> str:
    """INI sections of watchers running report.py (unless a `cmd` is given) with `options`."""
    text = ""
    for name, options in watchers.items():
        options = dict(options)
        cmd = options.pop("cmd", None) or report_command(circus.tmp, name)
        text += f"[watcher:{name}]\ncmd = {cmd}\n"
        text += "".join(f"{key} = {value}\n" for key, value in options.items()) + "\n"
    return text


def loopback_port() -> int:
    """A loopback TCP port free right now (bind-tested), for the tests of tcp:// endpoints.

    Only where a tcp endpoint is the point of the test: everything else uses ipc:// under the
    test's directory.
    """
    for port in random.sample(range(21000, 29000), 64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free loopback port in 21000-29000")


def ask(address: Any, family: int = socket.AF_INET, timeout: float = 5.0) -> int:
    """Connect to a served socket, send a line, return the pid the worker answers with
    (children/acceptor.py)."""
    with socket.socket(family, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(address)
        conn.sendall(b"hello\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = conn.recv(100)
            if not chunk:
                break
            answer += chunk
    return int(answer)
