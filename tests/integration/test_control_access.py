"""Who may use the control socket: socket modes, per-request credentials, tcp refusal, one owner.

Requests from other users are sent by a tiny standalone client run with `setpriv` under the
system python3 (with Debian's python3-zmq): the project venv's interpreter lives under /root,
which other users cannot enter.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from arbiter_harness import Circus
from control_helpers import (
    Clients,
    clients,
    control_endpoint,
    events_endpoint,
    loopback_port,
    watcher_sections,
)

pytestmark = pytest.mark.timeout(30)

SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = ["--reuid=nobody", "--regid=nogroup", "--clear-groups"]
ACCESS_DENIED = 7

# Sends each JSON request given as an argument; prints who it ran as and the replies (None when
# none came within the timeout: e.g. the kernel refused the connection).
CLIENT = textwrap.dedent("""
    import json, os, sys, uuid
    import zmq
    endpoint, timeout = sys.argv[1], float(sys.argv[2])
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.linger = 0
    socket.connect(endpoint)
    replies = []
    for text in sys.argv[3:]:
        message = dict(json.loads(text), id=uuid.uuid4().hex)
        socket.send(json.dumps(message).encode())
        replies.append(json.loads(socket.recv()) if socket.poll(timeout * 1000) else None)
    socket.close()
    context.term()
    print(json.dumps({"uid": os.getuid(), "groups": os.getgroups(), "replies": replies}))
""")


def _system_zmq() -> bool:
    if os.geteuid() != 0 or not (os.path.exists(SYSTEM_PYTHON) and shutil.which("setpriv")):
        return False
    check = [SYSTEM_PYTHON, "-I", "-c", "import zmq"]
    return subprocess.run(check, capture_output=True, check=False).returncode == 0


needs_system_zmq = pytest.mark.skipif(
    not _system_zmq(),
    reason="needs root, setpriv and python3-zmq (make .build/control-test-apt.stamp)",
)


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


@pytest.fixture
def operators() -> Iterator[tuple[str, str]]:
    """A fresh group and a user who is a member of it (not as primary group); removed after."""
    tag = uuid.uuid4().hex[:8]
    group, user = f"csdit-g{tag}", f"csdit-u{tag}"
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(
            ["useradd", "-M", "-N", "-g", "nogroup", "-G", group, "-d", "/nonexistent",
             "-s", "/usr/sbin/nologin", user],
            check=True,
        )
        try:
            yield user, group
        finally:
            subprocess.run(["userdel", user], check=False)
    finally:
        subprocess.run(["groupdel", group], check=False)


def _config(circus: Circus, directory: Path, arbiter_options: str = "") -> Path:
    """A config with one watcher, whose sockets are in `directory`/run (the arbiter makes it)."""
    run = directory / "run"
    text = (
        f"[circus]\nendpoint = ipc://{run}/control.sock\npubsub_endpoint = ipc://{run}/events.sock\n"
        f"{arbiter_options}\n\n"
        + watcher_sections(circus, {"web": {}})
    )
    path = circus.tmp / "circus.ini"
    path.write_text(text)
    return path


def _as_user(
    circus: Circus, directory: Path, user: list[str], *requests: dict[str, Any],
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Send `requests` as another user (setpriv arguments); {uid, groups, replies}."""
    script = directory / "client.py"
    script.write_text(CLIENT)
    script.chmod(0o644)
    endpoint = f"ipc://{directory}/run/control.sock"
    result = subprocess.run(
        ["setpriv", *user, SYSTEM_PYTHON, "-I", str(script), endpoint, str(timeout),
         *(json.dumps(r) for r in requests)],
        capture_output=True, text=True, timeout=10 + timeout * len(requests), cwd="/",
        check=False,
    )
    assert result.returncode == 0, f"the client failed:\n{result.stderr}\n{circus.log_tails()}"
    return dict(json.loads(result.stdout))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_sockets_are_private(circus: Circus) -> None:
    arbiter = circus.start(_config(circus, circus.tmp))
    run = circus.tmp / "run"

    assert _mode(run) == 0o700
    for name in ("control.sock", "events.sock"):
        info = (run / name).stat()
        assert stat.S_ISSOCK(info.st_mode), name
        assert stat.S_IMODE(info.st_mode) == 0o600, f"{name}: {oct(info.st_mode)}"
        assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())
    assert arbiter.running()


@needs_system_zmq
def test_a_stranger_is_refused_even_through_an_opened_socket(
    circus: Circus, zmq_clients: Clients
) -> None:
    world = circus.world_dir()
    arbiter = circus.start(_config(circus, world))
    status = {"command": "status", "properties": {}}

    # As created, the kernel itself keeps other users out: no connection, no reply.
    out = _as_user(circus, world, NOBODY, status, timeout=0.5)
    assert out["uid"] == 65534
    assert out["replies"] == [None]

    # Opened up (by mistake, say): the arbiter checks the sender of every request itself.
    (world / "run").chmod(0o755)
    (world / "run" / "control.sock").chmod(0o666)
    add = {"command": "add", "properties": {"name": "evil", "cmd": "/bin/true", "start": True}}
    out = _as_user(circus, world, NOBODY, status, add)
    for reply in out["replies"]:
        assert reply is not None, "an opened socket must answer, with a refusal"
        assert (reply["status"], reply["errno"]) == ("error", ACCESS_DENIED), reply
        assert "access denied" in reply["reason"] and "uid 65534" in reply["reason"], reply
    assert "evil" not in arbiter.log()
    # The owner is still served on the same socket.
    ctl = zmq_clients.control(f"ipc://{world}/run/control.sock")
    assert ctl.ok("list")["watchers"] == ["web"]


@needs_system_zmq
def test_a_group_member_may_operate_but_not_change_what_runs(
    circus: Circus, operators: tuple[str, str], zmq_clients: Clients
) -> None:
    user, group = operators
    gid = grp.getgrnam(group).gr_gid
    world = circus.world_dir()
    arbiter = circus.start(_config(circus, world, f"endpoint_group = {group}"))
    run = world / "run"

    assert (_mode(run), run.stat().st_gid) == (0o750, gid)
    for name in ("control.sock", "events.sock"):
        assert (_mode(run / name), (run / name).stat().st_gid) == (0o660, gid), name

    member = [f"--reuid={user}", "--regid=nogroup", "--init-groups"]
    allowed = [
        {"command": "status", "properties": {"name": "web"}},
        {"command": "incr", "properties": {"name": "web", "waiting": True}},
        {"command": "set", "properties": {"name": "web", "options": {"graceful_timeout": 5}}},
        {"command": "stats", "properties": {}},
    ]
    out = _as_user(circus, world, member, *allowed)
    assert out["uid"] != 0 and gid in out["groups"] and os.getegid() not in out["groups"]
    assert [r["status"] for r in out["replies"]] == ["active", "ok", "ok", "ok"], out["replies"]
    assert out["replies"][1]["numprocesses"] == 2

    refused = [
        {"command": "add", "properties": {"name": "evil", "cmd": "/bin/sh -c id", "start": True}},
        {"command": "rm", "properties": {"name": "web"}},
        {"command": "quit", "properties": {}},
        {"command": "reloadconfig", "properties": {}},
        {"command": "set", "properties": {"name": "web", "options": {"cmd": "/bin/sh"}}},
        {"command": "set", "properties": {"name": "web", "options": {"uid": "0"}}},
        {"command": "set", "properties": {"name": "web", "options": {"numprocesses": 3,
                                                                      "env": {"A": "1"}}}},
    ]
    out = _as_user(circus, world, member, *refused)
    for request, reply in zip(refused, out["replies"], strict=True):
        assert reply is not None and reply["status"] == "error", (request, reply)
        assert reply["errno"] == ACCESS_DENIED, (request, reply)
        assert "access denied" in reply["reason"], reply

    ctl = zmq_clients.control(f"ipc://{run}/control.sock")
    assert ctl.ok("list")["watchers"] == ["web"]
    options = ctl.ok("options", name="web")["options"]
    assert (options["numprocesses"], options["graceful_timeout"]) == (2, 5.0)
    assert "report.py" in options["cmd"] and options["uid"] is None and options["env"] == {}
    assert arbiter.running()


def test_a_non_loopback_tcp_endpoint_without_keys_is_refused(circus: Circus) -> None:
    port = loopback_port()
    config = circus.tmp / "circus.ini"
    config.write_text(
        f"[circus]\nendpoint = tcp://0.0.0.0:{port}\n"
        f"pubsub_endpoint = ipc://{circus.tmp}/events.sock\n\n"
        + watcher_sections(circus, {"web": {}})
    )

    result = circus.run(str(config))

    assert result.returncode == 78, result
    output = result.stdout + result.stderr
    assert f"tcp://0.0.0.0:{port}" in output and "insecure_tcp" in output, output
    assert circus.reports.wids("web") == [], "nothing was started"
    assert not (circus.tmp / "events.sock").exists()


def test_a_loopback_tcp_endpoint_works_with_a_warning(
    circus: Circus, zmq_clients: Clients
) -> None:
    port = loopback_port()
    config = circus.tmp / "circus.ini"
    config.write_text(
        f"[circus]\nendpoint = tcp://127.0.0.1:{port}\n"
        f"pubsub_endpoint = ipc://{circus.tmp}/events.sock\n\n"
        + watcher_sections(circus, {"web": {}})
    )

    arbiter = circus.start(config)

    assert "WARNING" in arbiter.log() and "has no authentication" in arbiter.log()
    ctl = zmq_clients.control(f"tcp://127.0.0.1:{port}")
    assert ctl.ok("status")["statuses"] == {"web": "active"}
    assert ctl.ok("incr", name="web", waiting=True)["numprocesses"] == 2


def test_a_second_arbiter_on_the_same_endpoint_refuses_to_start(
    circus: Circus, zmq_clients: Clients
) -> None:
    config = circus.write_config(watcher_sections(circus, {"web": {}}))
    first = circus.start(config)
    circus.reports.wait("web", 1)
    early = zmq_clients.control(control_endpoint(circus.tmp))
    assert early.ok("status", name="web")["status"] == "active"

    second = circus.run(str(config))

    assert second.returncode == 1, second
    output = second.stdout + second.stderr
    assert f"{circus.tmp}/control.sock.lock" in output and "in use" in output, output
    assert circus.reports.wids("web") == [1]
    assert len(circus.reports.history("web")) == 1, "the second arbiter started nothing"
    assert first.running()
    # The first one still answers: on its old connections, new ones, and on the events socket.
    assert early.ok("status", name="web")["status"] == "active"
    late = zmq_clients.control(control_endpoint(circus.tmp))
    assert late.ok("list")["watchers"] == ["web"]
    events = zmq_clients.events(events_endpoint(circus.tmp))
    events.sync(late, "web")
    assert first.running()
