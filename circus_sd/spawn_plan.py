"""From a watcher's config and a worker id to the exact request the spawner executes."""

from __future__ import annotations

import dataclasses
import functools
import pwd
import resource
import shlex
from collections.abc import Mapping, Sequence

from circus_sd.config.model import WatcherConfig
from circus_sd.config.options import OptionValueError, group_id, primary_group, user_id
from circus_sd.config.process_env import (
    LISTEN_FDS_START,
    ChildDefaults,
    ChildSetupError,
    child_environment,
    find_program,
    substitute,
)
from circus_sd.spawn_protocol import JournalStreamSetup, SpawnRequest

# What cannot be worked out for a process (a socket it is not given, no program): a failed spawn.
SpawnPlanError = ChildSetupError
# The spawner takes at most 64 fds with a request; two are the output pipes.
MAX_SOCKETS = 60
_NO_SOCKETS: Mapping[str, int] = {}


def socket_layout(config: WatcherConfig, available: Sequence[str]) -> list[tuple[str, int]]:
    """(socket name, fd in the process) of every socket a process gets, in passing order.

    `stdin_socket` goes to fd 0; `listen_fds` to 3, 4... in their order (sd_listen_fds); with
    `use_sockets`, every other socket of `available` (file order) follows.
    """
    layout: list[tuple[str, int]] = []
    if config.stdin_socket is not None:
        layout.append((config.stdin_socket, 0))
    names = list(config.listen_fds)
    if config.use_sockets:
        names += [name for name in available if name not in names]
    layout += [(name, LISTEN_FDS_START + i) for i, name in enumerate(names)]
    if len(layout) > MAX_SOCKETS:
        raise SpawnPlanError(f"too many sockets for one process ({len(layout)}; {MAX_SOCKETS} max)")
    return layout


def socket_numbers(layout: Sequence[tuple[str, int]]) -> dict[str, int]:
    """`$(circus.sockets.NAME)`: where NAME is in the process (its fd from 3, else 0)."""
    numbers = {name: fd for name, fd in reversed(layout) if fd >= LISTEN_FDS_START}
    for name, fd in layout:
        numbers.setdefault(name, fd)
    return numbers


def command_line(
    config: WatcherConfig,
    wid: int,
    env: Mapping[str, str],
    sockets: Mapping[str, int] = _NO_SOCKETS,
) -> list[str]:
    cmd = substitute(config.cmd, wid, env, sockets)
    args = substitute(config.args, wid, env, sockets)
    if config.shell:
        line = f"{cmd} {args}".strip()
        shell_args = substitute(config.shell_args, wid, env, sockets)
        return ["/bin/sh", "-c", line, *shlex.split(shell_args)]
    try:
        return [*_split(cmd), *_split(args)]
    except ValueError as exc:
        raise SpawnPlanError(f"cannot split the command line: {exc}") from None


@functools.lru_cache(maxsize=1024)
def _split(line: str) -> tuple[str, ...]:
    """shlex.split, remembered: the same line comes with every spawn of a watcher."""
    return tuple(shlex.split(line))


def resolve_program(name: str, env: Mapping[str, str], cwd: str | None) -> str:
    """An executable's path as execve needs it, found as the config check finds it."""
    return find_program(name, env, cwd)


def with_accounts(config: WatcherConfig) -> WatcherConfig:
    """`config` with the `uid`/`gid` names the file gave before this machine had those
    accounts looked up now; a SpawnPlanError while one is still missing."""
    if config.user_name is None and config.group_name is None:
        return config
    uid, gid = config.uid, config.gid
    try:
        if config.group_name is not None:
            gid = group_id(config.group_name)
    except OptionValueError as error:
        raise SpawnPlanError(f"gid: {error}") from None
    try:
        if config.user_name is not None:
            uid = user_id(config.user_name)
    except OptionValueError as error:
        raise SpawnPlanError(f"uid: {error}") from None
    if uid is not None and gid is None:
        gid = primary_group(uid)  # as the config check gives a uid without a gid
    return dataclasses.replace(config, uid=uid, gid=gid, user_name=None, group_name=None)


def build_request(
    config: WatcherConfig,
    wid: int,
    defaults: ChildDefaults,
    extra_env: Mapping[str, str] | None = None,
    fd_targets: Sequence[int] = (),
    journal_streams: Sequence[JournalStreamSetup] = (),
    cgroup: str | None = None,
    sockets: Sequence[tuple[str, int]] = (),
) -> SpawnRequest:
    """`extra_env`: variables the arbiter provides for this one process (NOTIFY_SOCKET).

    `fd_targets`: where the fds sent with the request go (the output pipes: 1, 2; sockets);
    `journal_streams`: output fds the child connects to journald itself;
    `cgroup`: the leaf cgroup the child joins before anything else;
    `sockets`: the `socket_layout` of the process (its fds are in `fd_targets` too).
    """
    config = with_accounts(config)
    numbers = socket_numbers(sockets)
    env = child_environment(config, wid, defaults, numbers)
    env.update(extra_env or {})
    env_own_pid: tuple[str, ...] = ()
    if config.listen_fds:
        # sd_listen_fds(3): LISTEN_PID is the process's own pid, set in it before exec.
        env["LISTEN_FDS"] = str(len(config.listen_fds))
        env["LISTEN_FDNAMES"] = ":".join(config.listen_fds)
        env_own_pid = ("LISTEN_PID",)
    argv = command_line(config, wid, env, numbers)
    if not argv:
        raise SpawnPlanError("empty command")
    program = substitute(config.executable, wid, env, numbers) if config.executable else argv[0]
    executable = resolve_program(program, env, config.working_dir)
    rlimits = {resource.RLIMIT_NOFILE: defaults.nofile}
    for resource_id, soft, hard in config.rlimits:
        rlimits[resource_id] = (soft, hard)
    user = None
    if config.uid is not None and defaults.is_root:
        try:
            user = pwd.getpwuid(config.uid).pw_name
        except KeyError:
            user = None
    inherit = {1, 2} - set(fd_targets) - {
        i
        for i, closed in ((1, config.close_child_stdout), (2, config.close_child_stderr))
        if closed
    }
    if not config.close_child_stdin and 0 not in fd_targets:
        inherit.add(0)
    return SpawnRequest(
        executable=executable,
        argv=tuple(argv),
        env=env,
        cwd=config.working_dir,
        uid=config.uid,
        gid=config.gid,
        groups=_supplementary_groups(config, user, defaults),
        user=user,
        umask=config.umask,
        rlimits=tuple((rid, soft, hard) for rid, (soft, hard) in sorted(rlimits.items())),
        inherit=frozenset(inherit),
        fd_targets=tuple(fd_targets),
        journal_streams=tuple(journal_streams),
        cgroup=cgroup,
        env_own_pid=env_own_pid,
    )


def _supplementary_groups(
    config: WatcherConfig, user: str | None, defaults: ChildDefaults
) -> tuple[int, ...] | None:
    """None = initgroups(user) or leave as is; else the exact list (root's must not leak)."""
    if not defaults.is_root or (config.uid is None and config.gid is None) or user is not None:
        return None
    return (config.gid,) if config.gid is not None else ()
