"""What a watcher's processes get from its config: their environment, `$(circus.…)` filled per
process, and the program file they execute. The config check and each spawn share it, so that
what `--check` accepts is what the spawn runs."""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import resource
import sys
from collections.abc import Mapping

from circus_sd.config.env_file import EnvFileValue
from circus_sd.config.model import WatcherConfig

# `$(circus.wid)`, `$(circus.env.HOME)`, `$(circus.sockets.web)`; case-insensitive as in Circus.
_PLACEHOLDER = re.compile(r"\$\(circus\.([\w.]+)\)", re.IGNORECASE)
# `$NAME` as Circus expands it in environment values (upper-case names only, so that a `$` in
# a password mostly survives), and `${Name}`, which any name may use.
_VARIABLE = re.compile(r"\$(?:([A-Z][A-Z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})")
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
_NO_SOCKETS: Mapping[str, int] = {}


class ChildSetupError(Exception):
    """What a process is to get cannot be worked out (a socket it is not given, no program)."""


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


def has_spawn_placeholder(text: str) -> bool:
    return _PLACEHOLDER.search(text) is not None


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
            raise ChildSetupError(
                f"$(circus.sockets.{socket_name}): the processes do not get this socket"
            )
        return str(sockets[socket_name])
    if lowered.startswith("env."):
        variable = name[4:]
        for candidate in (variable, variable.upper()):
            if candidate in env:
                return env[candidate]
    return None


def expand_variables(text: str, known: Mapping[str, str]) -> tuple[str, list[str]]:
    """`text` with `$NAME` and `${NAME}` replaced by their value in `known`, and the names
    `known` lacks: they expand to an empty string, as Circus's `parse_env_dict` does."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in known:
            missing.append(name)
        return known.get(name, "")

    return _VARIABLE.sub(replace, text), missing


def child_environment(
    config: WatcherConfig,
    wid: int,
    defaults: ChildDefaults,
    sockets: Mapping[str, int] = _NO_SOCKETS,
    unset: list[tuple[str, str]] | None = None,
) -> dict[str, str]:
    """The environment of process `wid`. Each `env` value gets its `$(circus.…)` filled, then
    its `$NAME`/`${NAME}` expanded against the values set before it and the arbiter's
    environment (`PATH = $PATH:/opt/bin`); `unset` collects (variable, NAME) of the names
    found in neither."""
    env: dict[str, str] = {}
    if config.copy_env:
        env.update(defaults.environ)
    elif config.copy_path:
        if "PATH" in defaults.environ:
            env["PATH"] = defaults.environ["PATH"]
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    for name in _PRIVATE_ENV:
        env.pop(name, None)
    arbiter_env = {k: v for k, v in defaults.environ.items() if k not in _PRIVATE_ENV}
    for name, value in config.env.items():
        if isinstance(value, EnvFileValue):
            env[name] = str(value)  # as the file wrote it
            continue
        filled = substitute(value, wid, env, sockets)
        env[name], missing = expand_variables(filled, collections.ChainMap(env, arbiter_env))
        if unset is not None:
            unset += [(name, variable) for variable in missing]
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


def find_program(program: str, env: Mapping[str, str], cwd: str | None) -> str:
    """The file execve runs for `program`: with a `/`, that path; else the first executable
    `program` on the process's PATH. Relative paths start at `cwd` (the arbiter's if None),
    where the process runs."""
    base = cwd or os.getcwd()
    if "/" in program:
        path = os.path.join(base, program)
        problem = _not_executable(path)
        if problem is not None:
            raise ChildSetupError(f"{program!r} {problem}")
        return path
    search = env.get("PATH", os.defpath)
    for directory in search.split(os.pathsep):
        candidate = os.path.join(base, directory, program)
        if _not_executable(candidate) is None:
            return candidate
    raise ChildSetupError(f"program {program!r} not found on the processes' PATH ({search})")


def _not_executable(path: str) -> str | None:
    """Why `path` cannot be executed, or None if it can."""
    if not os.path.exists(path):  # False too for a name the OS cannot take (NUL)
        return "does not exist"
    if not os.path.isfile(path):
        return "is not a file"
    if not os.access(path, os.X_OK):
        return "is not executable"
    return None
