"""[socket:NAME] sections, the watcher options that use them, LISTEN_* and the fd layout."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from circus_sd.config import ConfigError, load_config
from circus_sd.config.model import SocketConfig, WatcherConfig
from circus_sd.config.process_env import ChildDefaults
from circus_sd.sockets import SystemdSockets, parse_listen_env
from circus_sd.spawn_plan import (
    SpawnPlanError,
    build_request,
    socket_layout,
    socket_numbers,
)

ENV: Mapping[str, str] = {"PATH": "/usr/bin:/bin"}
DEFAULTS = ChildDefaults(environ={"PATH": "/usr/bin:/bin"}, nofile=(1024, 4096), is_root=False)


def load(tmp_path: Path, text: str) -> tuple[object, list[str]]:
    path = tmp_path / "circus.ini"
    path.write_text(textwrap.dedent(text).lstrip())
    config, warnings = load_config(str(path), ENV)
    return config, [str(w) for w in warnings]


def error_of(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return caught.value


# -- [socket:NAME] -------------------------------------------------------------------------------


def test_socket_defaults_are_circus_ones(tmp_path: Path) -> None:
    config, warnings = load(tmp_path, "[socket:web]\n")
    (web,) = config.sockets  # type: ignore[attr-defined]
    assert warnings == []
    assert (web.host, web.port, web.path, web.backlog) == ("localhost", 8080, None, 2048)
    assert (web.kind, web.proto, web.umask, web.blocking) == (socket.SOCK_STREAM, 0, None, False)
    assert (web.replace, web.so_reuseport, web.interface) == (False, False, None)
    assert web.address_family == socket.AF_INET


def test_socket_options_are_parsed(tmp_path: Path) -> None:
    config, warnings = load(tmp_path, """
        [socket:web]
        host = ::1
        port = 0
        type = sock_dgram
        proto = udp
        backlog = 5
        so_reuseport = yes
        interface = lo
        blocking = true

        [socket:unix]
        path = /run/app.sock
        umask = 022
        replace = true
        family = AF_UNIX
    """)
    web, unix = config.sockets  # type: ignore[attr-defined]
    assert warnings == []
    assert web.address_family == socket.AF_INET6  # from the IPv6 host
    assert (web.port, web.kind, web.proto, web.backlog) == (0, socket.SOCK_DGRAM, 17, 5)
    assert (web.so_reuseport, web.interface, web.blocking) == (True, "lo", True)
    # Octal, not Circus's int("022") == 22.
    assert unix.umask == 0o022
    assert unix.address_family == socket.AF_UNIX
    assert unix.replace is True


@pytest.mark.parametrize(
    ("line", "option", "message"),
    [
        ("port = 70000", "port", "expected a port number from 0 to 65535"),
        ("family = AF_PACKET", "family", "expected AF_INET, AF_INET6 or AF_UNIX"),
        ("type = SOCK_RAW", "type", "expected SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET"),
        ("proto = nonsense", "proto", "expected a protocol name"),
        ("umask = 999", "umask", "expected an octal mode"),
        ("family = AF_UNIX", "family", "AF_UNIX needs a `path`"),
    ],
)
def test_bad_socket_options_are_errors_at_their_line(
    tmp_path: Path, line: str, option: str, message: str
) -> None:
    error = error_of(tmp_path, f"[socket:web]\nhost = 127.0.0.1\n{line}\n")
    assert (error.line, error.section, error.option) == (3, "socket:web", option)
    assert message in error.message


def test_socket_oddities_warn(tmp_path: Path) -> None:
    _, warnings = load(tmp_path, """
        [socket:a]
        path = /run/a.sock
        port = 80
        colour = blue

        [socket:b]
        umask = 077
    """)
    path = tmp_path / "circus.ini"
    assert sorted(warnings) == [
        f"{path}:3: [socket:a] port: ignored for an AF_UNIX socket (`path`)",
        f"{path}:4: [socket:a] colour: unknown option (ignored)",
        f"{path}:7: [socket:b] umask: only used by AF_UNIX sockets (`path`)",
    ]


def test_a_socket_name_must_be_plain(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[socket:we b]\n")
    assert "invalid socket name 'we b'" in error.message


# -- watchers that use sockets -------------------------------------------------------------------


def test_watcher_socket_options(tmp_path: Path) -> None:
    config, warnings = load(tmp_path, """
        [socket:a]
        [socket:b]
        [watcher:web]
        cmd = /bin/true $(circus.sockets.a)
        use_sockets = true
        stdin_socket = b
        listen_fds = b a
    """)
    (web,) = config.watchers  # type: ignore[attr-defined]
    assert warnings == []
    assert (web.use_sockets, web.stdin_socket, web.listen_fds) == (True, "b", ("b", "a"))


@pytest.mark.parametrize(
    ("lines", "option", "message"),
    [
        ("stdin_socket = nope", "stdin_socket", "no [socket:nope] section"),
        ("listen_fds = a, nope", "listen_fds", "no [socket:nope] section"),
        ("listen_fds = a, a", "listen_fds", "a socket is named twice"),
    ],
)
def test_socket_references_are_checked(
    tmp_path: Path, lines: str, option: str, message: str
) -> None:
    error = error_of(tmp_path, f"[socket:a]\n[watcher:web]\ncmd = /bin/true\n{lines}\n")
    assert (error.section, error.option) == ("watcher:web", option)
    assert message in error.message


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("args = $(circus.sockets.nope)", "$(circus.sockets.nope): no [socket:nope]"),
        ("args = $(circus.sockets.a)", "the processes do not get this socket; set "
                                       "use_sockets = true"),
    ],
)
def test_a_socket_placeholder_the_processes_cannot_fill_fails_that_watcher_alone(
    tmp_path: Path, lines: str, message: str
) -> None:
    # As Circus loads it: a warning now, and each spawn of that watcher fails with the reason.
    _config, warnings = load(tmp_path, f"[socket:a]\n[watcher:web]\ncmd = /bin/true\n{lines}\n")
    (warning,) = warnings
    assert message in warning and "[watcher:web] args:" in warning


def test_listen_fds_makes_a_placeholder_valid(tmp_path: Path) -> None:
    config, _ = load(tmp_path, """
        [socket:a]
        [env:web]
        FD = $(circus.sockets.a)
        [watcher:web]
        cmd = /bin/true
        listen_fds = a
    """)
    assert dict(config.watchers[0].env) == {"FD": "$(circus.sockets.a)"}  # type: ignore[attr-defined]


# -- where sockets land in a process -------------------------------------------------------------


def test_layout_stdin_then_listen_fds_from_3_then_the_others_in_file_order() -> None:
    config = WatcherConfig(
        "w", cmd="x", stdin_socket="c", listen_fds=("b", "a"), use_sockets=True
    )
    layout = socket_layout(config, ["a", "b", "c", "d"])
    assert layout == [("c", 0), ("b", 3), ("a", 4), ("c", 5), ("d", 6)]
    assert socket_numbers(layout) == {"b": 3, "a": 4, "c": 5, "d": 6}
    only_stdin = socket_layout(WatcherConfig("w", cmd="x", stdin_socket="c"), ["c"])
    assert socket_numbers(only_stdin) == {"c": 0}
    assert socket_layout(WatcherConfig("w", cmd="x"), ["a"]) == []


def test_build_request_passes_listen_fds_the_systemd_way() -> None:
    config = WatcherConfig(
        "w",
        cmd="/bin/echo $(circus.sockets.web)",
        env={"ADMIN_FD": "$(circus.sockets.admin)"},
        listen_fds=("web", "admin"),
    )
    layout = socket_layout(config, ["admin", "web"])
    request = build_request(
        config, 1, DEFAULTS, fd_targets=[1, 2, *(fd for _n, fd in layout)], sockets=layout
    )
    assert request.argv == ("/bin/echo", "3")
    assert request.fd_targets == (1, 2, 3, 4)
    assert request.env["ADMIN_FD"] == "4"
    assert (request.env["LISTEN_FDS"], request.env["LISTEN_FDNAMES"]) == ("2", "web:admin")
    assert "LISTEN_PID" not in request.env
    assert request.env_own_pid == ("LISTEN_PID",)  # the child's own pid, set before exec


def test_a_placeholder_for_a_socket_the_process_does_not_get_fails_the_spawn() -> None:
    config = WatcherConfig("w", cmd="/bin/echo $(circus.sockets.web)")
    with pytest.raises(SpawnPlanError, match="do not get this socket"):
        build_request(config, 1, DEFAULTS)


def test_the_arbiters_own_listen_variables_never_reach_a_child() -> None:
    defaults = ChildDefaults(
        environ={"PATH": "/bin", "LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "x"},
        nofile=(1024, 1024),
        is_root=False,
    )
    request = build_request(WatcherConfig("w", cmd="/bin/true", copy_env=True), 1, defaults)
    assert not {k for k in request.env if k.startswith("LISTEN_")}
    assert request.env_own_pid == ()


# -- LISTEN_* (sd_listen_fds) --------------------------------------------------------------------


def test_listen_env_is_read_only_for_our_pid() -> None:
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "web:admin"}
    assert parse_listen_env(env, 42) == [(3, "web"), (4, "admin"), (5, "unknown")]
    assert parse_listen_env(env, 43) == []
    assert parse_listen_env({"LISTEN_PID": "42", "LISTEN_FDS": "x"}, 42) == []
    assert parse_listen_env({"LISTEN_PID": "42", "LISTEN_FDS": "1"}, 42) == [(3, "unknown")]


def test_taking_systemd_sockets_clears_the_variables_even_when_not_ours() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web", "HOME": "/root"}
    taken = SystemdSockets.take(env)
    assert taken.sockets == {} and taken.warnings == []
    assert env == {"HOME": "/root"}


def test_socket_config_is_declared_once_with_docs() -> None:
    from circus_sd.config.options import options_of

    keys = set(options_of(SocketConfig))
    assert keys == {
        "host", "port", "path", "family", "type", "proto", "backlog", "umask", "replace",
        "so_reuseport", "interface", "blocking",
    }
