"""The output socket (`output_endpoint`) from a plain ZMQ SUB socket: a subscription made while
other output flows (the arbiter sending all along) takes effect, and its lines come from then on.

The flowing output keeps waking the socket's descriptor, so this does not catch a subscription
whose wake-up a send consumed: test_subscription_reader.py holds the loop to catch that."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from arbiter_harness import Circus, child_command

pytestmark = pytest.mark.timeout(90)

WATCHERS = 8
# writer.py's lines: `NAME WID S SEQ PAYLOAD`.
LINE = re.compile(rb"(w\d+) 1 out (\d{8}) p*\n")


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.term()


def start_writers(circus: Circus) -> str:
    """WATCHERS watchers w0, w1, ..., each a process writing 200 numbered lines a second to
    stdout; the output endpoint."""
    sections = []
    for index in range(WATCHERS):
        writer = child_command(
            "writer.py", circus.tmp, f"w{index}", "--rate", "200", "--lines", "1000000"
        )
        sections.append(
            f"[watcher:w{index}]\ncmd = {writer}\n"
            "stdout_stream.class = FileStream\nstdout_stream.filename = /dev/null\n"
        )
    circus.start(circus.write_config("\n".join(sections)))
    return f"ipc://{circus.tmp}/control-output.sock"


def follower(context: zmq.Context[Any], endpoint: str, topic: bytes, first: bool) -> Any:
    """A SUB socket following `topic`, subscribed before connecting if `first`, else after."""
    socket = context.socket(zmq.SUB)
    socket.linger = 0
    if first:
        socket.subscribe(topic)
    socket.connect(endpoint)
    if not first:
        socket.subscribe(topic)
    return socket


def next_block(socket: Any, deadline: float, what: str) -> tuple[dict[str, Any], list[bytes]]:
    """The next message's header and lines, before `deadline`."""
    while not socket.poll(100):
        if time.monotonic() >= deadline:
            raise AssertionError(f"no output for {what} in time")
    topic, header, data = socket.recv_multipart()
    parsed = json.loads(header)
    assert topic == b"output.%s.%s" % (parsed["watcher"].encode(), parsed["stream"].encode())
    return parsed, data.splitlines(keepends=True)


def test_a_subscription_made_while_output_flows_gets_the_lines_from_then_on(
    circus: Circus, context: zmq.Context[Any]
) -> None:
    endpoint = start_writers(circus)
    # w0's output followed: the arbiter sends on the socket all along (which may take in the
    # subscriptions below without the loop hearing of them).
    flow = follower(context, endpoint, b"output.w0.stdout", first=True)
    sockets = [flow]
    try:
        next_block(flow, time.monotonic() + 15, "w0")
        for index in range(1, WATCHERS):
            name = f"w{index}"
            # Each a topic nobody follows yet, so the socket passes the subscription on.
            socket = follower(context, endpoint, f"output.{name}.stdout".encode(), index % 2 == 0)
            sockets.append(socket)
            deadline = time.monotonic() + 15
            numbers: list[int] = []
            seqs: list[int] = []
            while len(numbers) < 20:
                header, lines = next_block(socket, deadline, name)
                assert (header["watcher"], header["stream"]) == (name, "stdout"), header
                seqs.append(header["seq"])
                for line in lines:
                    match = LINE.fullmatch(line)
                    assert match is not None and match[1] == name.encode(), line
                    numbers.append(int(match[2]))
            # From then on: every line, in order, in messages numbered from the topic's first.
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
            assert seqs == list(range(1, len(seqs) + 1)), seqs
    finally:
        for socket in sockets:
            socket.close(linger=0)
