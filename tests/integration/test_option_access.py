"""Which options an endpoint_group member may change or read, tried as a real member would.

A raw Circus client is not circusctl: it sends keys spelled however it likes (`CMD`, ` uid`,
`Stdout_Stream.Filename`). Every admin-only option, in several spellings, is sent by a real
member of a throwaway group; none may be applied, and root's view of the watcher must not move.
"""

from __future__ import annotations

import dataclasses
import grp
import pwd
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from arbiter_harness import Arbiter, Circus, wait_until
from control_helpers import Clients, ControlClient, clients
from test_control_access import (
    ACCESS_DENIED,
    _as_user,
    needs_system_zmq,
    operators,  # noqa: F401 (a fixture)
)

from circus_sd.access import Tier
from circus_sd.config.model import WatcherConfig
from circus_sd.config.options import RLIMITS, option_of

pytestmark = pytest.mark.timeout(60)
MESSAGE_ERROR = 3


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


def _admin_keys() -> list[str]:
    """Every key a member may not set, from the declarations themselves, plus the families."""
    keys = [
        declared.key
        for field in dataclasses.fields(WatcherConfig)
        if (declared := option_of(field)) is not None and declared.tier is Tier.ADMIN
    ]
    return [*keys, "env", *sorted(RLIMITS), "stdout_stream.filename", "stderr_stream.class",
            "hooks.before_start"]


def _spellings(key: str) -> list[str]:
    return [key.upper(), key.title(), f" {key} ", key.swapcase() if key.islower() else key]


def _value(key: str, marker: Path) -> Any:
    """A value the option accepts, so that only access can refuse it."""
    if key == "env":
        return {"LD_PRELOAD": "/tmp/evil.so"}
    if key == "cmd":
        return f"/bin/sh -c 'touch {marker}'"
    samples = {"uid": "0", "gid": "0", "umask": "000", "working_dir": "/", "virtualenv": "/",
               "stdin_socket": "", "listen_fds": "", "after": "", "ready_log_line": "x",
               "stdout_stream.filename": str(marker), "stderr_stream.class": "FileStream",
               "hooks.before_start": "os.getcwd", "executable": "/bin/sh",
               "max_line": "100", "backpressure_timeout": "1"}
    if key in samples:
        return samples[key]
    if key.startswith("rlimit_"):
        return "1"
    return "true" if isinstance(getattr(WatcherConfig(name="x"), key, None), bool) else "x"


def _config(circus: Circus, world: Path, group: str) -> Path:
    run = world / "run"
    path = circus.tmp / "circus.ini"
    path.write_text(
        f"[circus]\nendpoint = ipc://{run}/control.sock\npubsub_endpoint = ipc://{run}/events.sock\n"
        f"endpoint_group = {group}\n\n"
        "[watcher:sleeper]\ncmd = /bin/sleep 600\n\n"
        "[env:sleeper]\nDATABASE_PASSWORD = hunter2\n"
    )
    return path


def _running(
    circus: Circus, zmq_clients: Clients, group: str
) -> tuple[Arbiter, Path, ControlClient]:
    """An arbiter on `_config` with its sleeper running; its world directory and root's client."""
    world = circus.world_dir()
    arbiter = circus.start(_config(circus, world, group))
    ctl = zmq_clients.control(f"ipc://{world}/run/control.sock")
    wait_until(lambda: len(ctl.ok("list", name="sleeper")["pids"]) == 1, 5, "sleeper running")
    return arbiter, world, ctl


def _member(user: str) -> list[str]:
    """setpriv arguments: `user`, with the groups it is a member of (endpoint_group among them)."""
    return [f"--reuid={user}", "--regid=nogroup", "--init-groups"]


@needs_system_zmq
def test_no_spelling_of_an_admin_option_lets_a_member_change_it(
    circus: Circus, operators: tuple[str, str], zmq_clients: Clients  # noqa: F811
) -> None:
    user, group = operators
    arbiter, world, ctl = _running(circus, zmq_clients, group)
    before = ctl.ok("options", name="sleeper")["options"]
    pids = ctl.ok("list", name="sleeper")["pids"]
    marker = world / "pwned"

    requests = [
        {"command": "set", "properties": {"name": "sleeper", "waiting": True,
                                          "options": {spelling: _value(key, marker)}}}
        for key in _admin_keys()
        for spelling in _spellings(key)
    ]
    # One admin key hidden among operate ones refuses the whole request.
    requests.append({"command": "set", "properties": {"name": "sleeper", "options": {
        "graceful_timeout": 3, "Cmd": f"/bin/sh -c 'touch {marker}'", "numprocesses": 2}}})
    out = _as_user(circus, world, _member(user), *requests, timeout=3.0)

    for request, reply in zip(requests, out["replies"], strict=True):
        assert reply is not None, request
        assert (reply["status"], reply.get("errno")) == ("error", ACCESS_DENIED), (request, reply)
    assert ctl.ok("options", name="sleeper")["options"] == before
    assert ctl.ok("list", name="sleeper")["pids"] == pids, "nothing may have been restarted"
    assert not marker.exists()
    assert arbiter.running()


@needs_system_zmq
def test_a_member_does_not_read_the_environment(
    circus: Circus, operators: tuple[str, str], zmq_clients: Clients  # noqa: F811
) -> None:
    user, group = operators
    _arbiter, world, ctl = _running(circus, zmq_clients, group)
    out = _as_user(
        circus, world, _member(user),
        {"command": "options", "properties": {"name": "sleeper"}},
        {"command": "get", "properties": {"name": "sleeper", "keys": ["env"]}},
        {"command": "get", "properties": {"name": "sleeper", "keys": ["graceful_timeout"]}},
    )
    options, get_env, get_timeout = out["replies"]
    assert options["status"] == "ok" and "env" not in options["options"], options
    assert "hunter2" not in str(options)
    assert (get_env["status"], get_env["errno"]) == ("error", ACCESS_DENIED), get_env
    assert get_timeout["options"] == {"graceful_timeout": 30.0}
    # Root still sees it.
    env = ctl.ok("options", name="sleeper")["options"]["env"]
    assert env == {"DATABASE_PASSWORD": "hunter2"}


def _ids(pid: int) -> dict[str, list[int]]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("Uid", "Gid", "Groups"):
            fields[name] = [int(v) for v in value.split()]
    return fields


def test_set_uid_gives_the_user_its_own_groups_not_roots(
    circus: Circus, zmq_clients: Clients
) -> None:
    _arbiter, _world, ctl = _running(circus, zmq_clients, "root")
    old = ctl.ok("list", name="sleeper")["pids"]

    ctl.ok("set", name="sleeper", options={"uid": "nobody"}, waiting=True)
    ctl.ok("restart", name="sleeper", waiting=True)

    def new_pid() -> int | None:
        pids = ctl.ok("list", name="sleeper")["pids"]
        return pids[0] if len(pids) == 1 and pids != old else None

    wait_until(lambda: new_pid() is not None, 10, "a restarted sleeper")
    pid = new_pid()
    assert pid is not None
    nobody = pwd.getpwnam("nobody")
    expected_groups = sorted({nobody.pw_gid, *(g.gr_gid for g in grp.getgrall()
                                                if "nobody" in g.gr_mem)})
    ids = _ids(pid)
    assert set(ids["Uid"]) == {nobody.pw_uid}, ids
    assert set(ids["Gid"]) == {nobody.pw_gid}, ids
    assert sorted(ids["Groups"]) == expected_groups, ids
    assert ctl.ok("options", name="sleeper")["options"]["gid"] == nobody.pw_gid


@pytest.mark.parametrize("timeout", [-1, "nan", "inf", True])
def test_a_kill_with_a_timeout_that_cannot_fire_is_refused(
    circus: Circus, zmq_clients: Clients, timeout: object
) -> None:
    _arbiter, _world, ctl = _running(circus, zmq_clients, "root")
    pids = ctl.ok("list", name="sleeper")["pids"]

    reason = ctl.error("kill", MESSAGE_ERROR, name="sleeper", graceful_timeout=timeout,
                       waiting=True)
    assert "graceful_timeout: expected a number of seconds >= 0" in reason
    assert ctl.ok("list", name="sleeper")["pids"] == pids


def test_set_refuses_a_socket_that_no_section_declares(
    circus: Circus, zmq_clients: Clients
) -> None:
    _arbiter, _world, ctl = _running(circus, zmq_clients, "root")
    before = ctl.ok("options", name="sleeper")["options"]
    pids = ctl.ok("list", name="sleeper")["pids"]

    reason = ctl.error("set", MESSAGE_ERROR, name="sleeper",
                       options={"listen_fds": "nosuchsocket"}, waiting=True)
    assert reason == "listen_fds: no [socket:nosuchsocket] section"
    assert ctl.ok("options", name="sleeper")["options"] == before
    assert ctl.ok("list", name="sleeper")["pids"] == pids


def test_add_refuses_a_program_not_on_the_processes_path_as_the_file_does(
    circus: Circus, zmq_clients: Clients
) -> None:
    _arbiter, _world, ctl = _running(circus, zmq_clients, "root")

    reason = ctl.error("add", MESSAGE_ERROR, name="ghost", cmd="no-such-program --serve",
                       start=True, waiting=True)
    assert reason.startswith("cmd: program 'no-such-program' not found on the processes' PATH")
    assert ctl.ok("list")["watchers"] == ["sleeper"]
