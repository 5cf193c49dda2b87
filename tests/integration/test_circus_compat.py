"""The real Circus 0.19 client against circus-sd: its Python client, its circusctl, its consumer.

Circus lives in its own venv (the Makefile's bench venv, or $CIRCUS_VENV): both packages install
a `circusctl`, and Circus must not leak into the project's venv. Circus code runs there, in
subprocesses with deadlines; what it saw comes back as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from arbiter_harness import ROOT, Arbiter, Circus, alive
from control_helpers import (
    control_endpoint,
    events_endpoint,
    loopback_port,
    real_pids,
    wait_count,
    watcher_sections,
)

CIRCUS_VENV = Path(os.environ.get("CIRCUS_VENV", ROOT / ".build" / "bench-venv"))
CIRCUS_PY = CIRCUS_VENV / "bin" / "python"
CIRCUSCTL = CIRCUS_VENV / "bin" / "circusctl"
DEADLINE = 20.0


def _circus_version() -> str | None:
    if not CIRCUS_PY.exists():
        return None
    result = subprocess.run(
        [str(CIRCUS_PY), "-c", "import circus; print(circus.__version__)"],
        capture_output=True, text=True, timeout=DEADLINE, check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


CIRCUS_VERSION = _circus_version()
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        CIRCUS_VERSION is None or not CIRCUS_VERSION.startswith("0.19"),
        reason=f"needs circus 0.19 in {CIRCUS_VENV} (make .build/bench-venv/.stamp)",
    ),
]


def _run_circus(script: str, *args: str) -> Any:
    """Run `script` with the Circus venv's python; the JSON it printed last."""
    result = subprocess.run(
        [str(CIRCUS_PY), "-c", textwrap.dedent(script), *args],
        capture_output=True, text=True, timeout=DEADLINE, check=False,
    )
    assert result.returncode == 0, f"circus script failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.splitlines()[-1])


def _circusctl(
    endpoint: str | None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Circus's circusctl, output to a pipe (so: its plain, script-friendly output)."""
    options = [] if endpoint is None else ["--endpoint", endpoint]
    return subprocess.run(
        [str(CIRCUSCTL), *options, *args],
        capture_output=True, text=True, timeout=DEADLINE, check=False,
        env={**os.environ, **(env or {})},
    )


def _start(circus: Circus, numprocesses: int = 2) -> Arbiter:
    arbiter = circus.start(circus.write_config(watcher_sections(circus, {
        "web": {"numprocesses": numprocesses, "graceful_timeout": 3},
        "db": {},
    })))
    wait_count(arbiter, "web", numprocesses)
    return arbiter


CLIENT_SCRIPT = """
    import json, sys
    from circus.client import CircusClient, make_message
    from circus.exc import CallError
    client = CircusClient(endpoint=sys.argv[1], timeout=5)
    out = {}
    out["status"] = client.call(make_message("status"))
    out["status_web"] = client.send_message("status", name="web")
    out["list"] = client.send_message("list")
    out["list_web"] = client.send_message("list", name="web")
    out["incr"] = client.send_message("incr", name="web")
    out["incr_waiting"] = client.send_message("incr", name="web", waiting=True)
    out["decr_waiting"] = client.send_message("decr", name="web", nb=2, waiting=True)
    out["options"] = client.send_message("options", name="web")
    out["stats"] = client.send_message("stats", name="web")
    out["stop"] = client.send_message("stop", name="web", waiting=True)
    out["status_stopped"] = client.send_message("status", name="web")
    out["start"] = client.send_message("start", name="web", waiting=True)
    out["unknown"] = client.send_message("status", name="nope")
    client.stop()
    print(json.dumps(out))
"""


def test_circus_client_library(circus: Circus) -> None:
    arbiter = _start(circus)
    before = real_pids(arbiter, "web")

    out = _run_circus(CLIENT_SCRIPT, control_endpoint(circus.tmp))

    assert out["status"]["status"] == "ok"
    assert out["status"]["statuses"] == {"db": "active", "web": "active"}
    assert out["status_web"]["status"] == "active"
    assert out["list"]["watchers"] == ["db", "web"]
    assert out["list_web"]["pids"] == before
    assert out["incr"]["status"] == "ok" and "numprocesses" not in out["incr"]
    assert out["incr_waiting"]["numprocesses"] == 4
    assert out["decr_waiting"]["numprocesses"] == 2
    assert out["options"]["options"]["numprocesses"] == 2
    assert out["stats"]["name"] == "web"
    for pid, info in out["stats"]["info"].items():
        assert info["pid"] == int(pid) and "mem_info1" in info and "cpu" in info
    assert out["stop"]["status"] == "ok"
    assert out["status_stopped"]["status"] == "stopped"
    assert out["start"]["status"] == "ok"
    assert out["start"]["info"] == {"started": wait_count(arbiter, "web", 2), "kept": []}
    assert not any(alive(pid) for pid in before)
    assert (out["unknown"]["status"], out["unknown"]["errno"]) == ("error", 3)
    assert out["unknown"]["reason"] == "program nope not found"


def test_circusctl_plain_output_and_exit_codes(circus: Circus) -> None:
    arbiter = _start(circus)
    endpoint = control_endpoint(circus.tmp)

    def ctl(*args: str, rc: int = 0) -> str:
        result = _circusctl(endpoint, *args)
        assert result.returncode == rc, f"circusctl {args}: {result}"
        return result.stdout + result.stderr

    assert ctl("status") == "db: active\nweb: active\n"
    assert ctl("status", "web") == "active\n"
    assert ctl("list") == "db,web\n"
    assert ctl("list", "web") == ",".join(map(str, real_pids(arbiter, "web"))) + "\n"
    assert ctl("incr", "web") == "ok\n"
    assert ctl("incr", "web", "--waiting") == "4\n"
    assert ctl("decr", "web", "2", "--waiting") == "2\n"
    assert "numprocesses: 2\n" in ctl("options", "web")
    pids = wait_count(arbiter, "web", 2)
    assert ctl("numprocesses", "web") == "2\n"
    stats = ctl("stats", "web").splitlines()
    assert stats[0] == "web:"
    assert sorted(int(line.split(":")[0]) for line in stats[1:]) == pids
    assert ctl("stop", "web", "--waiting") == "ok\n"
    assert ctl("status", "web") == "stopped\n"
    assert real_pids(arbiter, "web") == []
    assert ctl("start", "web", "--waiting") == "ok\n"
    wait_count(arbiter, "web", 2)
    # An error reply: Circus's message, exit status 3.
    assert ctl("start", "nope", rc=3) == "error: program nope not found\n"
    # CIRCUSCTL_ENDPOINT instead of --endpoint.
    result = _circusctl(None, "status", "db", env={"CIRCUSCTL_ENDPOINT": endpoint})
    assert (result.returncode, result.stdout) == (0, "active\n")


CONSUMER_SCRIPT = """
    import json, signal, sys
    from circus.client import CircusClient
    from circus.consumer import CircusConsumer
    signal.alarm(15)  # the deadline: SIGALRM ends the script, and the test fails
    control, events = sys.argv[1:3]
    client = CircusClient(endpoint=control, timeout=5)
    seen = []
    with CircusConsumer([b"watcher."], endpoint=events, timeout=0.1) as consumer:
        # A SUB socket misses what is published before it is connected: nudge an event out
        # (re-applying an option unchanged: `updated`) until one arrives.
        while not consumer.poller.poll(100):
            client.send_message("set", name="web", options={"graceful_timeout": 3}, waiting=True)
        client.send_message("incr", name="web", waiting=True)
        client.send_message("stop", name="web", waiting=True)
        for topic, message in consumer:
            seen.append([topic.decode(), json.loads(message)])
            if topic == b"watcher.web.stop":
                break
    client.stop()
    print(json.dumps(seen))
"""


def test_circus_consumer_receives_events(circus: Circus) -> None:
    arbiter = _start(circus, numprocesses=1)
    first = real_pids(arbiter, "web")[0]

    seen = _run_circus(CONSUMER_SCRIPT, control_endpoint(circus.tmp), events_endpoint(circus.tmp))

    topics = [topic for topic, _payload in seen]
    assert "watcher.web.updated" in topics
    spawn = next(payload for topic, payload in seen if topic == "watcher.web.spawn")
    assert set(spawn) == {"process_pid", "time"}
    kills = {payload["process_pid"] for topic, payload in seen if topic == "watcher.web.kill"}
    assert kills == {first, spawn["process_pid"]}
    reaps = {p["process_pid"]: p["exit_code"] for t, p in seen if t == "watcher.web.reap"}
    assert reaps == {first: -15, spawn["process_pid"]: -15}
    assert topics[-1] == "watcher.web.stop"


def test_a_stock_circus_config_on_loopback_tcp(circus: Circus) -> None:
    control, events, stats = loopback_port(), loopback_port(), loopback_port()
    config = circus.tmp / "circus.ini"
    config.write_text(textwrap.dedent(f"""
        [circus]
        check_delay = 5
        endpoint = tcp://127.0.0.1:{control}
        pubsub_endpoint = tcp://127.0.0.1:{events}
        stats_endpoint = tcp://127.0.0.1:{stats}

        """) + watcher_sections(circus, {"web": {"numprocesses": 2}}))

    arbiter = circus.start(config)

    log = arbiter.log()
    assert f"tcp://127.0.0.1:{control} has no authentication" in log, log
    endpoint = f"tcp://127.0.0.1:{control}"
    result = _circusctl(endpoint, "status")
    assert (result.returncode, result.stdout) == (0, "web: active\n"), result
    out = _run_circus(
        """
        import json, sys
        from circus.client import CircusClient
        client = CircusClient(endpoint=sys.argv[1], timeout=5)
        print(json.dumps(client.send_message("incr", name="web", waiting=True)))
        client.stop()
        """,
        endpoint,
    )
    assert (out["status"], out["numprocesses"]) == ("ok", 3)
    wait_count(arbiter, "web", 3)
