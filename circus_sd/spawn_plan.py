"""From a watcher's config and a worker id to the exact request the spawner executes."""

from __future__ import annotations

import dataclasses
import functools
import os
import pwd
import re
import resource
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence

from circus_sd.config.model import WatcherConfig
from circus_sd.spawner import JournalStreamSetup, SpawnRequest

# `$(circus.wid)`, `$(circus.env.HOME)`, `$(circus.sockets.web)`; case-insensitive as in Circus.
_PLACEHOLDER = re.compile(r"\$\(circus\.([\w.]+)\)", re.IGNORECASE)
# Variables that describe the arbiter's own relation to systemd: never a child's.
_PRIVATE_ENV = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
)
# sd_listen_fds(3): passed sockets start at fd 3.
LISTEN_FDS_START = 3
# The spawner takes at most 64 fds with a request; two are the output pipes.
MAX_SOCKETS = 60
_NO_SOCKETS: Mapping[str, int] = {}


class SpawnPlanError(Exception):
    """The request cannot be built (e.g. the program vanished); reported as a failed spawn."""


@dataclasses.dataclass(frozen=True)
class ChildDefaults:
    """What the arbiter itself contributes to every child."""

    environ: Mapping[str, str]
    # The soft/hard RLIMIT_NOFILE the arbiter started with, before raising its own.
    nofile: tuple[int, int]
    is_root: bool

    @classmethod
    def capture(cls) -> ChildDefaults:
        return cls(
            environ=dict(os.environ),
            nofile=resource.getrlimit(resource.RLIMIT_NOFILE),
            is_root=os.geteuid() == 0,
        )


def substitute(
    text: str, wid: int, env: Mapping[str, str], sockets: Mapping[str, int] = _NO_SOCKETS
) -> str:
    """Replace `$(circus.wid)`, `$(circus.env.NAME)` and `$(circus.sockets.NAME)` (the socket's
    fd number in the process). A variable the environment lacks, or an unknown name, stays as
    written, as Circus leaves it (the loader warns about both: `unresolved`)."""

    def replace(match: re.Match[str]) -> str:
        found = _placeholder_value(match.group(1), wid, env, sockets)
        return match.group(0) if found is None else found

    return _PLACEHOLDER.sub(replace, text)


def unresolved(
    text: str, wid: int, env: Mapping[str, str], sockets: Mapping[str, int] = _NO_SOCKETS
) -> list[str]:
    """The placeholders of `text` that `substitute` leaves as written."""
    return [
        match.group(0)
        for match in _PLACEHOLDER.finditer(text)
        if _placeholder_value(match.group(1), wid, env, sockets) is None
    ]


def _placeholder_value(
    name: str, wid: int, env: Mapping[str, str], sockets: Mapping[str, int]
) -> str | None:
    lowered = name.lower()
    if lowered == "wid":
        return str(wid)
    if lowered.startswith("sockets."):
        socket_name = name[len("sockets.") :]
        if socket_name not in sockets:
            # Checked by the loader: reaching here means the config changed under us.
            raise SpawnPlanError(
                f"$(circus.sockets.{socket_name}): the processes do not get this socket"
            )
        return str(sockets[socket_name])
    if lowered.startswith("env."):
        variable = name[4:]
        for candidate in (variable, variable.upper()):
            if candidate in env:
                return env[candidate]
    return None


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


def child_environment(
    config: WatcherConfig,
    wid: int,
    defaults: ChildDefaults,
    sockets: Mapping[str, int] = _NO_SOCKETS,
) -> dict[str, str]:
    env: dict[str, str] = {}
    if config.copy_env:
        env.update(defaults.environ)
    elif config.copy_path:
        if "PATH" in defaults.environ:
            env["PATH"] = defaults.environ["PATH"]
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    for name in _PRIVATE_ENV:
        env.pop(name, None)
    for name, value in config.env.items():
        env[name] = substitute(value, wid, env, sockets)
    if config.virtualenv:
        _apply_virtualenv(env, config.virtualenv)
    env["CIRCUS_WID"] = str(wid)
    return env


def _apply_virtualenv(env: dict[str, str], venv: str) -> None:
    env["VIRTUAL_ENV"] = venv
    env["PATH"] = os.pathsep.join(filter(None, [os.path.join(venv, "bin"), env.get("PATH")]))
    lib = os.path.join(venv, "lib")
    site = [
        os.path.join(lib, entry, "site-packages")
        for entry in (sorted(os.listdir(lib)) if os.path.isdir(lib) else [])
        if entry.startswith("python")
    ]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*site, env.get("PYTHONPATH")]))


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
    """An executable's path as execve needs it: searched on the child's PATH if bare."""
    if "/" in name:
        path = name if os.path.isabs(name) or cwd is None else os.path.join(cwd, name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
        raise SpawnPlanError(f"{path}: not an executable file")
    found = shutil.which(name, path=env.get("PATH", os.defpath))
    if found is None:
        raise SpawnPlanError(f"{name}: not found on PATH {env.get('PATH', os.defpath)!r}")
    return found


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
