"""`reload` of watchers that do not run: started, as Circus 0.19 starts a stopped watcher on reload
(the side-by-side comparison with Circus is in test_circus_compat_replies.py). Here the cases
Circus has no name for: a crash-looping watcher paused by flapping, and one that gave up."""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import pytest
from arbiter_harness import Circus, wait_until
from control_helpers import Clients, clients, control_endpoint, events_endpoint, watcher_sections

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


def test_reload_starts_paused_and_failed_watchers(circus: Circus, zmq_clients: Clients) -> None:
    fixed = circus.tmp / "fixed"
    # Crashes until the operator fixes what it needs (here: a file), then runs.
    crashing = shlex.quote(f"test -e {fixed} && exec sleep 600; exit 3")
    flapping = {"cmd": f"/bin/sh -c {crashing}", "backoff_initial": 0.05, "backoff_max": 0.05,
                "flapping.attempts": 2, "flapping.window": 5, "graceful_timeout": 2}
    circus.start(circus.write_config(watcher_sections(circus, {
        "web": {"graceful_timeout": 2},
        "paused": {**flapping, "flapping.retry_in": 600, "flapping.max_retry": -1},
        "failed": {**flapping, "flapping.retry_in": 0.1, "flapping.max_retry": 0},
    })))
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    events = zmq_clients.events(events_endpoint(circus.tmp))

    def states() -> dict[str, str]:
        details = ctl.ok("status", details=True)["details"]
        return {name: details[name]["state"] for name in details}

    wait_until(
        lambda: states() == {"web": "active", "paused": "paused", "failed": "failed"},
        10.0,
        "paused to pause and failed to give up",
        lambda: f"states: {states()}\n{circus.log_tails()}",
    )
    assert ctl.ok("status")["statuses"] == {"web": "active", "paused": "stopped",
                                            "failed": "stopped"}
    mark = events.sync(ctl, "web")
    web_before = set(ctl.ok("list", name="web")["pids"])

    # Still broken: the reload answers, and the watcher gives up again.
    ctl.ok("reload", name="failed", waiting=True, timeout=15)
    events.wait("watcher.failed.spawn", start=mark)
    wait_until(lambda: states()["failed"] == "failed", 10.0, "failed to give up again")

    mark = events.sync(ctl, "web")
    fixed.touch()
    ctl.ok("reload", waiting=True, timeout=15)

    assert states() == {"web": "active", "paused": "active", "failed": "active"}
    assert not set(ctl.ok("list", name="web")["pids"]) & web_before, "web's processes replaced"
    for name in ("paused", "failed", "web"):
        events.wait(f"watcher.{name}.reload", start=mark)
    for name in ("paused", "failed"):
        assert events.topics(mark).index(f"watcher.{name}.start") < events.topics(mark).index(
            f"watcher.{name}.reload"
        ), "started, then reported reloaded (as Circus)"
