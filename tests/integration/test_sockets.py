"""[socket:NAME]: bound once by the arbiter, shared by workers, kept across restarts, listen_fds.

Every TCP socket is on 127.0.0.1 and port 0: the arbiter binds a free port and `listsockets`
says which, so no test guesses a free port.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
from arbiter_harness import (
    CHILD_PYTHON,
    CHILDREN,
    CIRCUS_SD,
    Arbiter,
    Circus,
    read_json,
    wait_until,
)
from control_helpers import Clients, ControlClient, ask, clients, control_endpoint

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


def acceptor(circus: Circus, name: str, how: str, python: str = CHILD_PYTHON) -> str:
    """The `cmd` of a watcher serving on a socket it was given (children/acceptor.py)."""
    flags = "-S -E " if python == CHILD_PYTHON else ""
    return f"{python} {flags}{CHILDREN / 'acceptor.py'} {circus.tmp} {name} $(circus.wid) {how}"


def served(
    circus: Circus, socket_options: dict[str, Any] | None = None, **watcher_options: Any
) -> Path:
    """A config: [socket:web] on 127.0.0.1, a free port (unless `socket_options` say otherwise),
    and [watcher:web] running acceptor.py on it at $(circus.sockets.web)."""
    sock = {"host": "127.0.0.1", "port": 0, **(socket_options or {})}
    watcher = {
        "cmd": acceptor(circus, "web", "fd:$(circus.sockets.web)"),
        "use_sockets": "true",
        **watcher_options,
    }
    text = "[socket:web]\n" + "".join(f"{k} = {v}\n" for k, v in sock.items())
    text += "\n[watcher:web]\n" + "".join(f"{k} = {v}\n" for k, v in watcher.items())
    return circus.write_config(text)


def sockets_of(ctl: ControlClient) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in ctl.ok("listsockets")["sockets"]}


def reports(
    circus: Circus, name: str, count: int, not_pids: Collection[int] = ()
) -> list[dict[str, Any]]:
    """Wait for `count` workers of `name` (other than `not_pids`) to report; their reports."""

    def fresh() -> list[dict[str, Any]] | None:
        found = [read_json(circus.tmp / f"{name}.{wid}.json") for wid in range(1, count + 1)]
        if all(r is not None and r["pid"] not in not_pids for r in found):
            return [r for r in found if r is not None]
        return None

    return wait_until(fresh, 10, f"{count} fresh report(s) of {name}", circus.log_tails)


def arbiter_socket_inode(arbiter: Arbiter, fd: int) -> int:
    target = os.readlink(f"/proc/{arbiter.pid}/fd/{fd}")
    assert target.startswith("socket:["), target
    return int(target[len("socket:[") : -1])


class ClientLoop:
    """Connects again and again from a thread; keeps the answering pids and every error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(ask(("127.0.0.1", self.port)))
            except (OSError, ValueError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_workers_share_one_bound_port_and_a_restart_refuses_no_connection(
    circus: Circus, zmq_clients: Clients
) -> None:
    arbiter = circus.start(served(circus, numprocesses=3, graceful_timeout=5))
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    web = sockets_of(ctl)["web"]
    assert (web["host"], web["backlog"]) == ("127.0.0.1", 2048)
    port = web["port"]
    assert port > 0
    first = reports(circus, "web", 3)
    inode = arbiter_socket_inode(arbiter, web["fd"])
    for report in first:
        # $(circus.sockets.web) is the fd the socket has in the child: 3 here.
        (got,) = report["sockets"]
        assert (got["fd"], got["inode"]) == (3, inode), report
        assert got["address"] == ["127.0.0.1", port] and got["listening"]
        assert got["blocking"] is False  # Circus's default
        assert report["argv"][-1] == "fd:3"

    loop = ClientLoop(port)
    try:
        old = {r["pid"] for r in first}
        wait_until(lambda: len(set(loop.answers) & old) >= 2, 10,
                   "answers from at least two of the three workers")
        ctl.ok("restart", name="web", waiting=True, timeout=20)
        new = {r["pid"] for r in reports(circus, "web", 3, not_pids=old)}
        seen = len(loop.answers)
        wait_until(lambda: set(loop.answers[seen:]) & new, 10, "answers from the new workers")
    finally:
        loop.stop()
    assert loop.errors == [], loop.errors[:5]
    assert set(loop.answers) <= old | new
    assert len(loop.answers) > 20
    # The same socket, never closed: the arbiter's fd still holds it.
    assert sockets_of(ctl)["web"]["port"] == port
    assert arbiter_socket_inode(arbiter, web["fd"]) == inode


def test_listen_fds_gives_an_sd_listen_fds_program_its_named_sockets(
    circus: Circus, zmq_clients: Clients
) -> None:
    path = circus.tmp / "app.sock"
    # python3-systemd's systemd.daemon.listen_fds() is in the project's venv.
    config = circus.write_config(f"""
        [socket:app]
        path = {path}

        [socket:web]
        host = 127.0.0.1
        port = 0

        [watcher:sd]
        cmd = {acceptor(circus, "sd", "listen_fds", python=sys.executable)}
        listen_fds = app, web
        copy_env = true
        """)
    circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    (report,) = reports(circus, "sd", 1)
    assert report["env"] == {
        "LISTEN_FDS": "2",
        "LISTEN_FDNAMES": "app:web",
        "LISTEN_PID": str(report["pid"]),  # its own pid: set in the child before exec
    }
    unix, tcp = report["sockets"]
    assert (unix["fd"], unix["family"], unix["address"]) == (3, "AF_UNIX", str(path))
    assert (tcp["fd"], tcp["family"]) == (4, "AF_INET")
    assert tcp["address"][1] == sockets_of(ctl)["web"]["port"]
    # Nothing else is open in it but stdio and the two sockets (plus what it opened itself:
    # its wake-up pipe and the directory it listed).
    assert report["open_fds"][:5] == [0, 1, 2, 3, 4]
    assert len(report["open_fds"]) <= 8, report["open_fds"]
    assert ask(str(path), socket.AF_UNIX) == report["pid"]
    assert ask(("127.0.0.1", tcp["address"][1])) == report["pid"]


def test_stdin_socket_puts_the_socket_on_fd_0(circus: Circus, zmq_clients: Clients) -> None:
    config = circus.write_config(f"""
        [socket:fcgi]
        host = 127.0.0.1
        port = 0
        blocking = true

        [watcher:fcgi]
        cmd = {acceptor(circus, "fcgi", "stdin")}
        stdin_socket = fcgi
        """)
    circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    (report,) = reports(circus, "fcgi", 1)
    (got,) = report["sockets"]
    assert (got["fd"], got["listening"], got["blocking"]) == (0, True, True)
    assert ask(("127.0.0.1", sockets_of(ctl)["fcgi"]["port"])) == report["pid"]


@pytest.mark.parametrize(("umask", "mode"), [("077", 0o700), ("027", 0o750), (None, 0o777)])
def test_unix_socket_umask_is_octal_and_its_file_goes_at_exit(
    circus: Circus, umask: str | None, mode: int
) -> None:
    path = circus.tmp / "app.sock"
    # A stale socket file (its process is gone) is replaced without `replace`.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    config = circus.write_config(f"""
        [socket:app]
        path = {path}
        {f"umask = {umask}" if umask else ""}

        [watcher:app]
        cmd = {acceptor(circus, "app", "fd:$(circus.sockets.app)")}
        use_sockets = true
        """)
    arbiter = circus.start(config)
    (report,) = reports(circus, "app", 1)
    info = os.stat(path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == mode
    assert ask(str(path), socket.AF_UNIX) == report["pid"]
    assert "replacing the stale socket file" in arbiter.log()
    assert arbiter.stop() == 0
    assert not path.exists()


def test_a_unix_socket_in_use_is_not_taken(circus: Circus) -> None:
    path = circus.tmp / "busy.sock"
    busy = socket.socket(socket.AF_UNIX)
    busy.bind(str(path))
    busy.listen()
    try:
        config = circus.write_config(f"""
            [socket:busy]
            path = {path}
            """)
        result = circus.run(str(config))
    finally:
        busy.close()
    assert result.returncode == 1
    assert f"cannot start: [socket:busy] cannot bind {path}: {path} is in use" in result.stderr


def test_a_port_that_cannot_be_bound_is_a_start_up_error_naming_the_section(
    circus: Circus,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = circus.run(str(served(circus, {"port": port})))
    assert result.returncode == 1, result.stderr
    assert (
        f"cannot start: [socket:web] cannot bind 127.0.0.1:{port}: Address already in use"
        in result.stderr
    )
    assert "web: starting" not in result.stderr  # no watcher was started


def test_listsockets_and_stats_report_the_sockets(circus: Circus, zmq_clients: Clients) -> None:
    path = circus.tmp / "a.sock"
    config = circus.write_config(f"""
        [socket:web]
        host = 127.0.0.1
        port = 0
        backlog = 16

        [socket:local]
        path = {path}
        """)
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    listed = ctl.ok("listsockets")["sockets"]
    assert [s["fd"] for s in listed] == sorted(s["fd"] for s in listed)
    web, local = sorted(listed, key=lambda s: s["name"] != "web")
    port = web["port"]
    assert {k: web[k] for k in ("name", "host", "port", "backlog")} == {
        "name": "web", "host": "127.0.0.1", "port": port, "backlog": 16,
    }
    assert {k: local[k] for k in ("name", "path", "backlog")} == {
        "name": "local", "path": str(path), "backlog": 2048,
    }
    for entry in listed:
        arbiter_socket_inode(arbiter, entry["fd"])  # a real socket of the arbiter
    # Nobody accepts: two connections wait in web's queue, and stats says so.
    waiting = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        stats = ctl.ok("stats")
        assert stats["sockets"]["web"]["queued"] == 2
        assert stats["sockets"]["web"]["backlog"] == 16
    finally:
        for conn in waiting:
            conn.close()
    # circusctl prints Circus's format.
    plain = subprocess.run(
        [str(CIRCUS_SD.parent / "circusctl"), "--endpoint", control_endpoint(circus.tmp),
         "listsockets"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout.splitlines()
    assert sorted(plain) == sorted([
        f"{web['fd']}:socket 'web' at 127.0.0.1:{port}",
        f"{local['fd']}:socket 'local' at {path}",
    ])


def test_reload_rebinds_a_changed_socket_and_restarts_only_its_watchers(
    circus: Circus, zmq_clients: Clients
) -> None:
    text = """
        [socket:web]
        host = 127.0.0.1
        port = 0
        backlog = {backlog}

        [watcher:web]
        cmd = {web}
        use_sockets = true

        [watcher:other]
        cmd = {other}
        """
    commands = {
        "web": acceptor(circus, "web", "fd:$(circus.sockets.web)"),
        "other": f"{CHILD_PYTHON} -S -E {CHILDREN / 'report.py'} {circus.tmp} other $(circus.wid)",
    }
    config = circus.write_config(text.format(backlog=10, **commands))
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    (before,) = reports(circus, "web", 1)
    other = circus.reports.wait("other", 1)
    # Unchanged: a reload keeps the socket and the processes.
    arbiter.send(signal.SIGHUP)
    arbiter.wait_log("configuration reloaded", count=1)
    assert sockets_of(ctl)["web"]["backlog"] == 10
    circus.write_config(text.format(backlog=20, **commands))
    arbiter.send(signal.SIGHUP)
    arbiter.wait_log("configuration reloaded", count=2)
    assert "web: restarting it, a socket it uses changed" in arbiter.log()
    (after,) = reports(circus, "web", 1, not_pids={before["pid"]})
    assert after["sockets"][0]["inode"] != before["sockets"][0]["inode"]
    web = sockets_of(ctl)["web"]
    assert web["backlog"] == 20
    assert ask(("127.0.0.1", web["port"])) == after["pid"]
    assert circus.reports.get("other", 1) == other  # not restarted


def test_so_reuseport_gives_each_process_its_own_socket(
    circus: Circus, zmq_clients: Clients
) -> None:
    circus.start(served(circus, {"so_reuseport": "true"}, numprocesses=2))
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    port = sockets_of(ctl)["web"]["port"]
    first, second = reports(circus, "web", 2)
    assert first["sockets"][0]["inode"] != second["sockets"][0]["inode"]
    assert first["sockets"][0]["address"][1] == second["sockets"][0]["address"][1] == port
    # The kernel spreads connections over the processes' sockets (by the client's port).
    answers = {ask(("127.0.0.1", port)) for _ in range(60)}
    assert answers == {first["pid"], second["pid"]}


def test_a_socket_passed_by_systemd_is_adopted_by_name(
    circus: Circus, zmq_clients: Clients
) -> None:
    """What systemd's socket activation does, by hand: the socket at fd 3, LISTEN_PID our pid."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    # The section's address could not be bound here (TEST-NET-1): it is not, it is adopted.
    config = served(circus, {"host": "192.0.2.1", "port": 80}, copy_env="true")
    log_path = circus.tmp / "arbiter-systemd.log"
    env = {**os.environ, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:spare"}
    spare = socket.socket()

    def at_fd_3() -> None:
        os.dup2(listener.fileno(), 3)
        os.dup2(spare.fileno(), 4)

    with open(log_path, "wb") as log, open(os.devnull, "rb") as stdin:
        popen = subprocess.Popen(
            ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', str(CIRCUS_SD), str(config)],
            stdin=stdin, stdout=log, stderr=log, cwd=circus.tmp, env=env,
            preexec_fn=at_fd_3, pass_fds=(3, 4),
        )
    listener.close()
    spare.close()
    arbiter = Arbiter(popen, log_path)
    circus.arbiters.append(arbiter)
    arbiter.wait_log("circus-sd running", timeout=10)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    web = sockets_of(ctl)["web"]
    assert (web["host"], web["port"], web["systemd"]) == ("127.0.0.1", port, True)
    (report,) = reports(circus, "web", 1)
    assert ask(("127.0.0.1", port)) == report["pid"]
    assert f"[socket:web] adopted from systemd: fd 3, 127.0.0.1:{port}" in arbiter.log()
    assert "systemd passed a socket named 'spare' (fd 4) that no [socket:spare]" in arbiter.log()
    # The children never see the arbiter's LISTEN_* (copy_env copies the rest).
    assert report["env"] == {}
