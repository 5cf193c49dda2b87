"""The `circusctl` executable and circus_sd.client against a real arbiter over real ipc sockets.

Output is read through pipes, so circusctl prints Circus's plain lines (what scripts parse).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from arbiter_harness import ROOT, Circus, alive, report_command, wait_until

from circus_sd.client import AsyncCircusClient, CallError, CircusClient

pytestmark = pytest.mark.timeout(60)

CIRCUSCTL = ROOT / ".venv" / "bin" / "circusctl"


def endpoint(circus: Circus) -> str:
    return f"ipc://{circus.tmp}/control.sock"


def ctl(circus: Circus, *args: str, timeout: float = 15.0, stdin: str | None = None,
        env: dict[str, str] | None = None, with_endpoint: bool = True
        ) -> subprocess.CompletedProcess[str]:
    """Run circusctl to completion, stdin and stdout not terminals."""
    argv = [str(CIRCUSCTL), *(["--endpoint", endpoint(circus)] if with_endpoint else []), *args]
    return subprocess.run(argv, input=stdin if stdin is not None else "", capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


def ok_out(circus: Circus, *args: str) -> str:
    """circusctl's stdout, after checking that it exited 0 and printed no error."""
    result = ctl(circus, *args)
    assert (result.returncode, result.stderr) == (0, ""), result
    return result.stdout


def pids_of(circus: Circus, name: str) -> set[int]:
    text = ok_out(circus, "list", name).strip()
    return {int(pid) for pid in text.split(",")} if text else set()


@pytest.fixture
def two_watchers(circus: Circus) -> Iterator[Circus]:
    """An arbiter running web (2 processes) and db (1), both up and reported."""
    config = circus.write_config(f"""
        [watcher:web]
        cmd = {report_command(circus.tmp, "web")}
        numprocesses = 2
        graceful_timeout = 2

        [watcher:db]
        cmd = {report_command(circus.tmp, "db")}
        graceful_timeout = 2
        """)
    circus.start(config)
    for name, wid in (("web", 1), ("web", 2), ("db", 1)):
        circus.reports.wait(name, wid)
    yield circus


def test_status_list_and_counts_print_circus_plain_lines(two_watchers: Circus) -> None:
    circus = two_watchers
    web = {circus.reports.wait("web", wid)["pid"] for wid in (1, 2)}
    db = circus.reports.wait("db", 1)["pid"]

    assert ok_out(circus, "status") == "db: active\nweb: active\n"
    assert ok_out(circus, "status", "web") == "active\n"
    assert ok_out(circus, "list") == "db,web\n"
    assert pids_of(circus, "web") == web
    assert ok_out(circus, "list", "db") == f"{db}\n"
    assert ok_out(circus, "numprocesses") == "3\n"
    assert ok_out(circus, "numprocesses", "web") == "2\n"
    assert ok_out(circus, "numwatchers") == "2\n"


def test_incr_and_decr_with_waiting_print_the_new_number(two_watchers: Circus) -> None:
    circus = two_watchers

    assert ok_out(circus, "incr", "web", "--waiting") == "3\n"
    third = circus.reports.wait("web", 3)
    assert third["pid"] in pids_of(circus, "web")
    assert len(pids_of(circus, "web")) == 3

    assert ok_out(circus, "decr", "web", "2", "--waiting") == "1\n"
    assert len(pids_of(circus, "web")) == 1
    assert ok_out(circus, "numprocesses", "web") == "1\n"

    # Without --waiting Circus's reply has no number: "ok", and the work follows.
    assert ok_out(circus, "incr", "web") == "ok\n"
    wait_until(lambda: len(pids_of(circus, "web")) == 2, 5.0, "web to have 2 processes again")


def test_stop_and_start_a_watcher(two_watchers: Circus) -> None:
    circus = two_watchers
    before = pids_of(circus, "web")

    assert ok_out(circus, "stop", "web", "--waiting") == "ok\n"
    assert ok_out(circus, "status", "web") == "stopped\n"
    assert ok_out(circus, "status") == "db: active\nweb: stopped\n"
    assert pids_of(circus, "web") == set()
    assert not any(alive(pid) for pid in before)

    assert ok_out(circus, "start", "web", "--waiting") == "ok\n"
    assert ok_out(circus, "status", "web") == "active\n"
    after = pids_of(circus, "web")
    assert len(after) == 2
    assert not after & before


def test_options_get_and_globaloptions(two_watchers: Circus) -> None:
    circus = two_watchers

    options = ok_out(circus, "options", "web").splitlines()
    assert "numprocesses: 2" in options
    assert "graceful_timeout: 2.0" in options
    assert any(line.startswith("cmd: ") and "report.py" in line for line in options)
    assert ok_out(circus, "get", "web", "numprocesses") == "numprocesses: 2\n"

    unknown = ctl(circus, "get", "web", "no_such_option")
    assert unknown.returncode == 3
    assert unknown.stdout == ""
    assert unknown.stderr.startswith("error: ") and "no_such_option" in unknown.stderr

    globals_ = ok_out(circus, "globaloptions").splitlines()
    assert f"endpoint: {endpoint(circus)}" in globals_
    assert f"pubsub_endpoint: ipc://{circus.tmp}/events.sock" in globals_


def test_set_changes_a_watcher(two_watchers: Circus) -> None:
    circus = two_watchers
    assert ok_out(circus, "set", "web", "numprocesses", "3", "graceful_timeout", "1.5",
                  "--waiting") == "ok\n"
    assert ok_out(circus, "get", "web", "numprocesses", "graceful_timeout") == (
        "numprocesses: 3\ngraceful_timeout: 1.5\n")
    wait_until(lambda: len(pids_of(circus, "web")) == 3, 5.0, "web to have 3 processes")


def test_stats_lines_per_process(two_watchers: Circus) -> None:
    circus = two_watchers
    web = sorted(pids_of(circus, "web"))
    db = pids_of(circus, "db").pop()

    lines = ok_out(circus, "stats").splitlines()
    assert "web:" in lines and "db:" in lines
    for pid in [*web, db]:
        assert any(line.startswith(f"{pid}: {pid}  ") for line in lines), (pid, lines)

    one = ok_out(circus, "stats", "web", str(web[0]))
    assert one.startswith(f"{web[0]}: {web[0]}  ")
    assert one.endswith("\n\n")  # Circus's own extra newline

    arbiter = circus.arbiters[0]
    dstats = ok_out(circus, "dstats").splitlines()
    assert dstats[0] == "Main Process:"
    assert dstats[1].startswith(f"    {arbiter.pid}  ")


def test_listen_prints_a_spawn_event_after_an_incr(two_watchers: Circus) -> None:
    circus = two_watchers
    # No --pubsub-endpoint: circusctl asks the arbiter (globaloptions) where it publishes.
    with subprocess.Popen(
        [str(CIRCUSCTL), "--endpoint", endpoint(circus), "listen", "watcher.web."],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as listener:
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert listener.stdout is not None
            for line in listener.stdout:
                lines.put(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            spawned = _first_spawn(circus, listener, lines)
        finally:
            listener.send_signal(signal.SIGINT)
            status = listener.wait(5.0)
            reader.join(5.0)
        assert status == 0
    assert spawned["process_pid"] in pids_of(circus, "web")
    assert isinstance(spawned["time"], float)


def _first_spawn(circus: Circus, listener: subprocess.Popen[str], lines: queue.Queue[str]
                 ) -> dict[str, Any]:
    # A subscription takes effect some time after the connection (ZMQ's slow joiner): add
    # processes until an event gets through, within a deadline.
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        assert listener.poll() is None, listener.stderr.read() if listener.stderr else ""
        assert ok_out(circus, "incr", "web", "--waiting").strip().isdigit()
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        topic, _, payload = line.rstrip("\n").partition(" ")
        if topic == "watcher.web.spawn":
            return dict(json.loads(payload))
    raise AssertionError("no watcher.web.spawn event within 10 s")


def test_an_unknown_command_exits_2_with_the_usage_line(two_watchers: Circus) -> None:
    # As Circus's circusctl (argparse): nothing is sent, the usage line says how to call it.
    result = ctl(two_watchers, "bogus")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "circusctl: unknown command 'bogus'",
        "usage: circusctl [options] <command> [args]  (see `circusctl --help`)",
    ]

    missing = ctl(two_watchers, "status", "nosuch")
    assert (missing.returncode, missing.stdout) == (3, "")
    assert missing.stderr.startswith("error: ") and "nosuch" in missing.stderr

    usage = ctl(two_watchers, "incr")
    assert usage.returncode == 2
    assert "incr: wrong number of arguments" in usage.stderr


def test_json_prints_the_raw_reply(two_watchers: Circus) -> None:
    circus = two_watchers
    reply = json.loads(ok_out(circus, "--json", "status", "--details"))
    assert reply["status"] == "ok"
    assert reply["statuses"] == {"db": "active", "web": "active"}
    assert set(reply["details"]["web"]["pids"]) == pids_of(circus, "web")
    assert "details" not in json.loads(ok_out(circus, "--json", "status"))

    error = ctl(circus, "--json", "status", "nosuch")
    assert error.returncode == 3
    assert json.loads(error.stdout)["status"] == "error"


def test_the_endpoint_comes_from_the_environment(two_watchers: Circus) -> None:
    env = {**os.environ, "CIRCUSCTL_ENDPOINT": endpoint(two_watchers)}
    result = ctl(two_watchers, "list", env=env, with_endpoint=False)
    assert (result.returncode, result.stdout) == (0, "db,web\n")


def test_shell_runs_commands_read_from_stdin(two_watchers: Circus) -> None:
    result = ctl(two_watchers, stdin="list\nnumwatchers\nhelp incr\nexit\n")
    assert result.returncode == 0, result
    assert result.stdout.startswith("circusctl ")
    for expected in ("db: active\nweb: active\n", "db,web\n", "2\n", "usage: circusctl incr"):
        assert expected in result.stdout


def test_top_prints_one_snapshot_when_not_on_a_terminal(two_watchers: Circus) -> None:
    circus = two_watchers
    out = ok_out(circus, "top")
    assert "2 watchers, 3 processes" in out
    for pid in pids_of(circus, "web") | pids_of(circus, "db"):
        assert str(pid) in out


# -- no arbiter there ------------------------------------------------------------------------------


def test_a_missing_socket_exits_1_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [str(CIRCUSCTL), "--endpoint", f"ipc://{tmp_path}/control.sock", "status"],
        capture_output=True, text=True, timeout=15, check=False,
    )
    assert result.returncode == 1
    assert "the arbiter is not running, or the endpoint is wrong" in result.stderr
    assert time.monotonic() - started < 2.0


def test_a_dead_endpoint_exits_1_within_the_timeout(tmp_path: Path) -> None:
    # A socket file nobody listens on, as a killed arbiter leaves behind.
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()

    started = time.monotonic()
    result = subprocess.run(
        [str(CIRCUSCTL), "--endpoint", f"ipc://{path}", "--timeout", "0.5", "status"],
        capture_output=True, text=True, timeout=15, check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "timed out after 0.5s" in result.stderr and str(path) in result.stderr
    assert 0.5 <= elapsed < 3.0


# -- the Python client -----------------------------------------------------------------------------


def test_blocking_client_call_and_cast(two_watchers: Circus) -> None:
    with CircusClient(endpoint(two_watchers), timeout=5.0) as client:
        reply = client.call("status", name="web")
        assert reply["status"] == "active"
        reply = client.call("incr", name="web", nb=2, waiting=True)
        assert (reply["status"], reply["numprocesses"]) == ("ok", 4)
        client.cast("decr", name="web", nb=3)
        wait_until(lambda: client.call("numprocesses", name="web")["numprocesses"] == 1, 5.0,
                   "the cast decr to leave web with one process")


def test_async_client(two_watchers: Circus) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with AsyncCircusClient(endpoint(two_watchers)) as client:
            return list(await asyncio.gather(client.call("list"), client.call("numwatchers")))

    listed, counted = asyncio.run(scenario())
    assert listed["watchers"] == ["db", "web"]
    assert counted["numwatchers"] == 2


@contextlib.contextmanager
def fake_arbiter(address: str) -> Iterator[zmq.Socket[bytes]]:
    """A bare ROUTER socket bound at `address`, closed afterwards."""
    context = zmq.Context()
    router: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(address)
    try:
        yield router
    finally:
        router.close()
        context.term()


def test_client_skips_replies_to_other_requests(tmp_path: Path) -> None:
    """A reply to an earlier, timed-out call must not be taken for the current one."""
    address = f"ipc://{tmp_path}/fake.sock"
    with fake_arbiter(address) as router:

        def serve() -> None:
            if not router.poll(5000):
                return
            identity, frame = router.recv_multipart()
            request = json.loads(frame)
            for reply_id in ("stale", request["id"]):
                reply = {"status": "ok", "id": reply_id, "answer": reply_id}
                router.send_multipart([identity, json.dumps(reply).encode()])

        server = threading.Thread(target=serve)
        server.start()
        try:
            with CircusClient(address, timeout=5.0) as client:
                reply = client.call("status")
        finally:
            server.join(10.0)
    assert reply["answer"] == reply["id"] != "stale"


def test_client_times_out_naming_the_endpoint(tmp_path: Path) -> None:
    address = f"ipc://{tmp_path}/silent.sock"
    with fake_arbiter(address), CircusClient(address, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(CallError, match=f"timed out after 0.3s .* from {address}"):
            client.call("status")
        assert 0.3 <= time.monotonic() - started < 2.0
