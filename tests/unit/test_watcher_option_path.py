"""One path for watcher options: the config file and `add`/`set` resolve keys, parse values and
cross-check the watcher the same way, so that neither accepts what the other refuses."""

from __future__ import annotations

import dataclasses
import pwd
import textwrap
from pathlib import Path

import pytest

from circus_sd.access import Tier
from circus_sd.config import ConfigError, WatcherConfig, load_config
from circus_sd.config.changes import changed_options, is_live, needs_restart
from circus_sd.config.model import hook_search_path
from circus_sd.config.watcher_changes import WatcherOptionError
from circus_sd.config.watcher_checks import WatcherContext, cross_check
from circus_sd.config.watcher_keys import resolve_key, sent_as_text
from circus_sd.control.protocol import CommandError
from circus_sd.control.watcher_options import apply_options, parse_options
from circus_sd.spawn_plan import SpawnPlanError, resolve_program

ENV = {"PATH": "/usr/bin:/bin"}
SLEEP = WatcherConfig(name="web", cmd="sleep 1")


def _context(*sockets: str) -> WatcherContext:
    return WatcherContext(sockets, ENV, is_root=True)


def _set(config: WatcherConfig, options: dict[str, object], *sockets: str) -> WatcherConfig:
    return apply_options(config, parse_options(options, Tier.ADMIN), _context(*sockets))


def _file_error(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "circus.ini"
    path.write_text(textwrap.dedent(text).removeprefix("\n"))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), ENV)
    return caught.value


# -- keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field", "sub"),
    [
        (" Graceful_Timeout ", "graceful_timeout", ""),
        ("FLAPPING.ATTEMPTS", "flapping_attempts", ""),
        ("Rlimit_NoFile", "rlimits", ""),
        ("STDOUT_STREAM.Filename", "stdout_stream", "filename"),
        ("hooks.Before_Start", "hooks", "before_start"),
        ("\tEnv", "env", ""),
    ],
)
def test_a_key_resolves_to_its_field_whatever_its_spelling(raw: str, field: str, sub: str) -> None:
    key = resolve_key(raw)
    assert key is not None and (key.field, key.sub) == (field, sub)


def test_the_tier_is_the_fields_and_an_unknown_key_is_no_option() -> None:
    assert resolve_key("NUMPROCESSES").tier is Tier.OPERATE  # type: ignore[union-attr]
    assert resolve_key("stderr_stream.class").tier is Tier.ADMIN  # type: ignore[union-attr]
    assert resolve_key("check_delay") is None
    assert resolve_key("stdout_stream") is None


def test_uid_gid_and_umask_are_sent_as_text() -> None:
    assert [key for key in ("uid", "GID", "umask", "numprocesses", "cmd") if sent_as_text(key)] == [
        "uid", "GID", "umask",
    ]


# -- live changes and the hook search path -------------------------------------------------------


def test_live_fields_apply_without_a_restart_others_need_one() -> None:
    faster = dataclasses.replace(SLEEP, graceful_timeout=1.0, numprocesses=3)
    assert changed_options(SLEEP, faster) == ["numprocesses", "graceful_timeout"]
    assert not needs_restart(SLEEP, faster)
    assert needs_restart(SLEEP, dataclasses.replace(faster, cmd="sleep 2"))
    assert (is_live("hooks"), is_live("cmd"), is_live("nonsense")) == (True, False, False)
    moved = dataclasses.replace(SLEEP, location=None)
    assert changed_options(SLEEP, moved) == []


def test_hooks_are_searched_on_pythonpath_then_the_config_directory() -> None:
    config = dataclasses.replace(SLEEP, env={"PYTHONPATH": "/a::$(circus.env.HOME)/b:/c"})
    assert hook_search_path("/etc/circus", config) == ["/a", "/c", "/etc/circus"]
    assert hook_search_path(None, config) == ["/a", "/c"]


# -- cross-checks: the same for the file and for `set`/`add` --------------------------------------


def test_set_refuses_a_socket_that_is_not_declared(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"listen_fds: no \[socket:nope\] section"):
        _set(SLEEP, {"listen_fds": "web nope"}, "web")
    with pytest.raises(CommandError, match=r"stdin_socket: no \[socket:nope\] section"):
        _set(SLEEP, {"stdin_socket": "nope"}, "web")
    assert _set(SLEEP, {"listen_fds": "web"}, "web").listen_fds == ("web",)
    error = _file_error(tmp_path, """
        [socket:web]
        port = 0
        [watcher:web]
        cmd = sleep 1
        listen_fds = web nope
        """)
    assert (error.line, error.option) == (5, "listen_fds")
    assert error.message == "no [socket:nope] section"


def test_a_program_not_on_the_processes_path_is_refused_by_set_and_warned_by_the_file(
    tmp_path: Path,
) -> None:
    with pytest.raises(CommandError) as refused:
        _set(SLEEP, {"cmd": "no-such-program --flag"})
    path = tmp_path / "circus.ini"
    path.write_text("[watcher:web]\ncmd = no-such-program --flag\n")
    _config, warnings = load_config(str(path), ENV)
    (warning,) = [w for w in warnings if w.option == "cmd"]
    assert warning.message.startswith(str(refused.value).removeprefix("cmd: "))
    assert "'no-such-program' not found on the processes' PATH (/bin:/usr/bin)" in warning.message


def test_the_program_is_found_where_the_spawn_finds_it(tmp_path: Path) -> None:
    tool = tmp_path / "bin" / "tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    # A relative PATH entry starts at the working directory, for the check and for the spawn.
    config = _set(SLEEP, {"cmd": "tool", "working_dir": str(tmp_path), "env": {"PATH": "bin"}})
    assert resolve_program("tool", config.env, config.working_dir) == str(tool)
    with pytest.raises(SpawnPlanError, match="'tool' not found"):
        resolve_program("tool", {"PATH": "bin"}, "/")


def test_ready_log_line_needs_output_the_arbiter_reads() -> None:
    closed = _set(SLEEP, {"close_child_stdout": "true"})
    with pytest.raises(CommandError, match="ready_log_line: circus-sd never sees"):
        _set(closed, {"close_child_stderr": True, "ready_log_line": "up"})


def test_a_uid_without_gid_runs_as_its_primary_group_in_the_file_and_with_set() -> None:
    nobody = pwd.getpwnam("nobody")
    checked, _notices = cross_check(dataclasses.replace(SLEEP, uid=nobody.pw_uid), _context())
    assert checked.gid == nobody.pw_gid
    root = dataclasses.replace(SLEEP, uid=0, gid=0)
    assert _set(root, {"uid": "nobody"}).gid == nobody.pw_gid  # the gid goes with the user
    assert _set(root, {"uid": "nobody", "gid": "0"}).gid == 0


def test_the_checks_name_the_option_at_fault() -> None:
    with pytest.raises(WatcherOptionError) as caught:
        cross_check(dataclasses.replace(SLEEP, working_dir="/no/such/dir"), _context())
    assert (caught.value.key, caught.value.on_line) == ("working_dir", False)
    with pytest.raises(WatcherOptionError) as caught:
        cross_check(dataclasses.replace(SLEEP, cmd="  "), _context())
    assert (caught.value.key, caught.value.message) == ("cmd", "missing or empty")
