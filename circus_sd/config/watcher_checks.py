"""The checks of a whole watcher, once its options are applied: run on each watcher of the
config file and on what `add` and `set` make, so that neither accepts what the other refuses."""

from __future__ import annotations

import dataclasses
import functools
import os
import shlex
from collections.abc import Callable, Mapping, Sequence

from circus_sd.config.env_file import EnvFileValue
from circus_sd.config.model import WatcherConfig
from circus_sd.config.options import primary_group
from circus_sd.config.placeholders import PLACEHOLDER, has_placeholder, placeholder_name
from circus_sd.config.process_env import (
    LISTEN_FDS_START,
    ChildDefaults,
    ChildSetupError,
    child_environment,
    find_program,
    unresolved,
)
from circus_sd.config.streams import JOURNAL
from circus_sd.config.watcher_changes import Notice, WatcherOptionError
from circus_sd.config.watcher_keys import OPTIONS

# (key, field) of the options whose text is filled per process at each spawn (Option.spawn_time).
_SPAWN_TIME = sorted(
    (key, field) for key, (field, declared) in OPTIONS.items() if declared.spawn_time
)


@dataclasses.dataclass(frozen=True)
class WatcherContext:
    """What a watcher's options are checked against: the arbiter it runs in."""

    # Its [socket:NAME] sections; None: not known here, socket references are not checked.
    socket_names: Sequence[str] | None
    # The environment the processes may copy (copy_env, copy_path).
    environ: Mapping[str, str]
    is_root: bool
    # The config file's directory, where hooks are imported from too (hook_search_path).
    config_dir: str | None = None
    # What depends on the machine's state (a program, a directory, a socket the processes are
    # not given) only warns: the config file's watchers then fail at their spawns, alone, and
    # start once it is fixed. False for `add`/`set`, which refuse it at once.
    defer_machine_state: bool = False

    @classmethod
    def of_this_process(
        cls, socket_names: Sequence[str] | None = None, config_dir: str | None = None
    ) -> WatcherContext:
        return cls(socket_names, os.environ, os.geteuid() == 0, config_dir)


def cross_check(
    config: WatcherConfig, context: WatcherContext
) -> tuple[WatcherConfig, list[Notice]]:
    """`config` with what follows from it (the gid of its uid), and warnings; raises
    WatcherOptionError for a watcher that cannot run."""
    if not config.cmd.strip():
        raise WatcherOptionError("cmd", "missing or empty", on_line=False)
    check_socket_references(config, context.socket_names)
    check_ready_log_line(config)
    program_of(config)
    env, unset = _first_process_environment(config, context)
    notices = _unfilled_placeholders(config, env, context.socket_names or ())
    notices += [
        Notice(
            f"env {name}",
            f"${variable} is set neither before it nor in the arbiter's environment: it "
            "expands to an empty string, as in Circus",
            on_line=False,
        )
        for name, variable in unset
    ]
    machine_state: list[Callable[[], None]] = [
        functools.partial(check_socket_placeholders, config, context.socket_names),
        functools.partial(check_working_dir, config),
        functools.partial(check_program, config, env),
    ]
    for check in machine_state:
        try:
            check()
        except WatcherOptionError as error:
            if not context.defer_machine_state:
                raise
            notices.append(machine_state_notice(error))
    switches_user = config.uid is not None or config.user_name is not None
    if (switches_user or config.gid is not None or config.group_name) and not context.is_root:
        notices.append(Notice(
            "uid" if switches_user else "gid",
            "switching user or group needs the arbiter to run as root; "
            "the processes may fail to start",
            on_line=False,
        ))
    return with_primary_group(config), notices


def machine_state_notice(error: WatcherOptionError) -> Notice:
    """What a config file is told of a watcher that cannot start on this machine as it is."""
    return Notice(
        error.key,
        f"{error.message}: its processes fail to start until this is fixed",
        on_line=error.on_line,
    )


def with_primary_group(config: WatcherConfig) -> WatcherConfig:
    """A `uid` without a `gid` runs as that user's primary group, never the arbiter's (the
    spawner then also takes the user's supplementary groups: initgroups)."""
    if config.uid is None or config.gid is not None:
        return config
    return dataclasses.replace(config, gid=primary_group(config.uid))


def check_socket_references(config: WatcherConfig, socket_names: Sequence[str] | None) -> None:
    """Sockets named by `stdin_socket` and `listen_fds` exist, each named once."""
    if socket_names is None:
        return
    known = set(socket_names)
    named = {
        "stdin_socket": [config.stdin_socket] if config.stdin_socket is not None else [],
        "listen_fds": list(config.listen_fds),
    }
    for key, names in named.items():
        for socket_name in names:
            if socket_name not in known:
                raise WatcherOptionError(key, f"no [socket:{socket_name}] section")
        if len(set(names)) != len(names):
            raise WatcherOptionError(key, "a socket is named twice")


def check_socket_placeholders(
    config: WatcherConfig, socket_names: Sequence[str] | None
) -> None:
    """Sockets named by `$(circus.sockets.NAME)` exist and are passed to the processes."""
    if socket_names is None:
        return
    known = set(socket_names)
    passed = set(known) if config.use_sockets else {*config.listen_fds}
    if config.stdin_socket is not None:
        passed.add(config.stdin_socket)
    texts = [
        (key, value, True)
        for key in ("cmd", "args", "shell_args", "executable")
        if (value := getattr(config, key))
    ]
    texts += [
        (f"env {name}", raw, False)
        for name, raw in config.env.items()
        if not isinstance(raw, EnvFileValue)  # given as written: no placeholder in it
    ]
    for key, text, on_line in texts:
        for match in PLACEHOLDER.finditer(text):
            prefix, _, socket_name = placeholder_name(match).partition(".")
            if prefix.lower() != "sockets":
                continue
            if socket_name not in known:
                message = f"{match.group(0)}: no [socket:{socket_name}] section"
            elif socket_name not in passed:
                message = (
                    f"{match.group(0)}: the processes do not get this socket; set "
                    "use_sockets = true (or name it in listen_fds)"
                )
            else:
                continue
            raise WatcherOptionError(key, message, on_line=on_line)


def check_ready_log_line(config: WatcherConfig) -> None:
    if config.ready_log_line is not None and not _arbiter_reads_output(config):
        raise WatcherOptionError(
            "ready_log_line",
            "circus-sd never sees this watcher's output (both streams are closed or go "
            "straight to journald with `direct`): use `notify` instead",
        )


def _arbiter_reads_output(config: WatcherConfig) -> bool:
    """Does any of a watcher's streams pass through the arbiter (for `ready_log_line`)?"""
    for closed, chosen in (
        (config.close_child_stdout, config.stdout_stream),
        (config.close_child_stderr, config.stderr_stream),
    ):
        direct = chosen is not None and chosen.class_name == JOURNAL and chosen.direct
        if not closed and not direct:
            return True
    return False


def check_working_dir(config: WatcherConfig) -> None:
    working_dir = config.working_dir
    if working_dir and not has_placeholder(working_dir) and not os.path.isdir(working_dir):
        raise WatcherOptionError(
            "working_dir", f"{working_dir!r} is not an existing directory", on_line=False
        )


def program_of(config: WatcherConfig) -> tuple[str, str]:
    """(the program a watcher runs, the key that names it); raises for a `cmd` that cannot be
    read (unbalanced quotes, no word): an error whatever the machine holds."""
    if config.executable is not None:
        return config.executable, "executable"
    if config.shell:
        return "/bin/sh", "shell"
    try:
        words = shlex.split(config.cmd)
    except ValueError as error:
        message = f"cannot split into words: {error}"
        raise WatcherOptionError("cmd", message, on_line=False) from None
    if not words or not words[0]:
        raise WatcherOptionError("cmd", "no program to run", on_line=False)
    return words[0], "cmd"


def check_program(config: WatcherConfig, env: Mapping[str, str] | None) -> None:
    """The program exists and is executable, found as the spawn finds it (`find_program`);
    `env`: the processes' environment, None when only known per process."""
    program, key = program_of(config)
    if has_placeholder(program):
        return  # only known per process
    if not os.path.isabs(program) and has_placeholder(config.working_dir or ""):
        return  # relative to a directory only known per process
    if "/" not in program and (env is None or has_placeholder(env.get("PATH", ""))):
        return  # a PATH only known per process
    try:
        find_program(program, env or {}, config.working_dir)
    except ChildSetupError as error:
        raise WatcherOptionError(key, str(error), on_line=False) from None


def _first_process_environment(
    config: WatcherConfig, context: WatcherContext
) -> tuple[dict[str, str] | None, list[tuple[str, str]]]:
    """The environment of the watcher's first process, or None when it cannot be told here,
    and the (variable, NAME) of its `$NAME` references to nothing."""
    defaults = ChildDefaults(context.environ, (0, 0), context.is_root)
    sockets = dict.fromkeys(context.socket_names or (), LISTEN_FDS_START)
    unset: list[tuple[str, str]] = []
    try:
        return child_environment(config, 1, defaults, sockets, unset), unset
    except ChildSetupError:
        return None, []  # a socket placeholder the processes cannot fill: checked apart


def _unfilled_placeholders(
    config: WatcherConfig, env: Mapping[str, str] | None, socket_names: Sequence[str]
) -> list[Notice]:
    """`cmd`, `args` and `shell_args` keep their `$(circus.…)` until each spawn, where one
    that names no variable of the process's environment stays as written (as in Circus):
    say so now, since the program will most likely not expect it."""
    if env is None:
        return []
    sockets = dict.fromkeys(socket_names, LISTEN_FDS_START)
    notices: list[Notice] = []
    for key, field in _SPAWN_TIME:
        try:
            found = unresolved(str(getattr(config, field)), 1, env, sockets)
        except ChildSetupError:
            continue
        notices += [
            Notice(
                key,
                f"{placeholder} names no variable of the processes' environment (set it in "
                "an [env] section, or copy_env = true): it is passed as written",
            )
            for placeholder in found
        ]
    return notices
