"""Property-based: whatever arrives on the control socket gets a well-formed reply, and the
arbiter keeps supervising.

Three streams of requests, 100 examples each (300 in all), derandomized so that CI runs the
same ones every time: arbitrary bytes, arbitrary JSON values, and valid command names with
properties of arbitrary types. Commands that would legitimately stop or replace what runs
(stop, rm, set, kill, signal) only ever name a watcher that does not exist, `add` never starts
what it adds (and it is removed again), quit and reloadconfig are not sent: so the checks at the
end hold whatever the examples were.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from arbiter_harness import Circus, wait_until
from control_helpers import (
    Clients,
    ControlClient,
    clients,
    control_endpoint,
    real_pids,
    wait_count,
    watcher_sections,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.timeout(90)

EXAMPLES = 100  # per stream
REPLY_DEADLINE = 5.0
WATCHER = "fuzz"
GHOST = "ghost"  # no such watcher

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["", "fuzz", "*", "web", "true", "1", "-1", "TERM", "nb", "regex"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)

SAFE_COMMANDS = [
    "status", "list", "listsockets", "numprocesses", "numwatchers", "get", "options",
    "globaloptions", "stats", "dstats", "incr", "decr", "start", "restart", "reload",
    "listen", "ipython", "STATUS", "Incr",
]
# These only ever get the name of a watcher that does not exist.
GHOST_COMMANDS = ["stop", "rm", "set", "kill", "signal"]
ADDED = "added"  # what `add` adds, stopped, and the test removes at once
PROPERTY_NAMES = [
    "name", "nb", "waiting", "match", "keys", "options", "pid", "signum", "graceful",
    "sequential", "extended", "process", "option", "childpid", "child_pid", "children",
    "recursive", "graceful_timeout", "nostop", "start", "cmd", "args",
]


@st.composite
def typed_requests(draw: st.DrawFn) -> dict[str, Any]:
    command = draw(st.sampled_from([*SAFE_COMMANDS, *GHOST_COMMANDS, "add"]))
    properties = draw(
        st.dictionaries(st.sampled_from(PROPERTY_NAMES) | st.text(max_size=6), json_values,
                        max_size=5)
    )
    if draw(st.booleans()):
        properties["name"] = draw(st.sampled_from([WATCHER, "FUZZ", "f*", "fu.*", "nope"]))
    if command in GHOST_COMMANDS:
        properties["name"] = GHOST
    if command == "add":
        properties.update(name=ADDED, start=False)
    if command.lower() == "incr":
        properties["nb"] = _small(properties.get("nb"))
    request: dict[str, Any] = {"command": command, "properties": properties}
    if draw(st.booleans()):
        request["id"] = draw(st.text(max_size=12) | st.integers() | st.none())
    return request


def _small(nb: Any) -> Any:
    """`nb` as drawn, unless it would ask for many processes (any type the server coerces)."""
    try:
        many = abs(int(nb)) > 2
    except (TypeError, ValueError, OverflowError):
        return nb
    return 1 if many else nb


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


def _expects_reply(payload: Any) -> bool:
    return not (isinstance(payload, dict) and payload.get("msg_type") == "cast")


def _check(ctl: ControlClient, payload: Any, raw: bytes) -> dict[str, Any] | None:
    """Send `raw` (the encoding of `payload`, if any); check that its reply is well-formed."""
    ctl.send(raw)
    if not _expects_reply(payload):
        return None
    reply = ctl.receive(REPLY_DEADLINE)
    assert isinstance(reply.get("time"), float), reply
    if reply["status"] == "error":
        assert type(reply["errno"]) is int and 0 <= reply["errno"] <= 7, reply
        assert isinstance(reply["reason"], str) and reply["reason"], reply
        # errno 5 is what an unexpected exception in a handler becomes: a bug, not a reply.
        assert reply["errno"] != 5, f"{payload!r}: {reply['reason']}\n{reply.get('tb')}"
    else:
        # `status NAME` puts the watcher's status in the envelope, as Circus does.
        assert reply["status"] in ("ok", "active", "stopped", "starting", "stopping"), reply
    sent_id = payload.get("id") if isinstance(payload, dict) else None
    if isinstance(sent_id, str):
        assert reply["id"] == sent_id, (payload, reply)
    return reply


def test_any_request_gets_a_well_formed_reply_and_supervision_goes_on(
    circus: Circus, zmq_clients: Clients
) -> None:
    config = circus.write_config(watcher_sections(circus, {
        WATCHER: {"numprocesses": 2, "graceful_timeout": 2, "min_uptime": 0,
                  "check_flapping": "false"},
    }))
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    counts = {"bytes": 0, "json": 0, "typed": 0}

    @FUZZ_SETTINGS
    @given(st.binary(max_size=256))
    def arbitrary_bytes(data: bytes) -> None:
        counts["bytes"] += 1
        try:
            payload = json.loads(data)
        except ValueError:
            payload = None
        _check(ctl, payload, data)

    @FUZZ_SETTINGS
    @given(json_values)
    def arbitrary_json(value: Any) -> None:
        counts["json"] += 1
        _check(ctl, value, json.dumps(value).encode())

    @FUZZ_SETTINGS
    @given(typed_requests())
    def arbitrary_properties(request: dict[str, Any]) -> None:
        counts["typed"] += 1
        reply = _check(ctl, request, json.dumps(request).encode())
        # Cast or not, the server must still answer the next request.
        if not _expects_reply(request):
            ctl.ok("numwatchers")
        if request["command"] == "add":
            if reply is not None and reply["status"] == "ok":
                wait_until(lambda: ADDED in ctl.ok("list")["watchers"], 2, "the added watcher")
            if ADDED in ctl.ok("list")["watchers"]:
                ctl.ok("rm", name=ADDED, waiting=True)

    arbitrary_bytes()
    arbitrary_json()
    arbitrary_properties()
    assert counts == {"bytes": EXAMPLES, "json": EXAMPLES, "typed": EXAMPLES}, counts
    assert arbiter.running()

    # Still supervising: the process count agrees with the target ...
    def agreed() -> bool:
        details = ctl.ok("status", name=WATCHER, details=True)["details"][WATCHER]
        return bool(len(real_pids(arbiter, WATCHER)) == details["numprocesses"])

    wait_until(agreed, 10, f"{WATCHER}'s processes to match its numprocesses", arbiter.log_tail)
    assert ctl.ok("list")["watchers"] == [WATCHER], "only the fuzzed watcher (adds were removed)"
    # ... and a process killed with SIGKILL is replaced.
    ctl.ok("set", name=WATCHER, options={"numprocesses": 2}, waiting=True)
    ctl.ok("start", name=WATCHER, waiting=True)
    victim = wait_count(arbiter, WATCHER, 2)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: len(pids := real_pids(arbiter, WATCHER)) == 2 and victim not in pids,
        5,
        "the killed process to be replaced",
        arbiter.log_tail,
    )
    assert "Traceback" not in arbiter.log()
