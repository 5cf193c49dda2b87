"""The spawn protocol, one definition for both ends: the request, its encoding, the child's report.

Both the arbiter and the spawner use this very module: the spawner (circus_sd/spawn_server.py, a
bare `python -IS` that cannot import circus_sd) is given its source too, and runs it under this
name (circus_sd.spawner.fork_spawner). So it imports nothing beyond the interpreter's own modules:
no `dataclasses` (it would more than double the spawner's modules), no `typing`, no `pickle.py`.

Messages, over the SOCK_SEQPACKET socketpair: the arbiter sends an encoded `SpawnRequest` with the
child's fds attached (SCM_RIGHTS), or an encoded list of them (a batch: the fds of each request in
turn); the spawner answers each message, in order: ("ok", pid) plus the read end of the child's
exec-status pipe, or ("error", errno, message) when it could not fork; for a batch, one list of
those answers with the pipes of the "ok" ones, in order. The exec-status pipe gives EOF when exec
succeeded, or one report (`exec_status_report`) when setup or exec failed.
"""

from __future__ import annotations

import _pickle
import io

# Annotations are never evaluated (`from __future__ import annotations`): for mypy alone.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The child reports a setup/exec failure with this status (as a shell does for "cannot execute").
EXEC_FAILED_STATUS = 127
MAX_MESSAGE = 1 << 20
# The kernel passes at most this many fds with one message (SCM_MAX_FD).
MAX_FDS_PER_MESSAGE = 253


class _Record:
    """Equality and repr from the fields, as a dataclass has; the fields are set once, by
    __init__ or by decoding (not frozen: a frozen __init__ costs a call per field, per spawn)."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in vars(self).items())
        return f"{type(self).__name__}({fields})"


class JournalStreamSetup(_Record):
    """Connect the child's fd `target` to journald's stream socket, as sd_journal_stream_fd does.

    Done in the child just before exec, so that journald records the child's own pid (peer
    credentials are taken at connect time). If the socket cannot be reached, the fd already at
    `target` (a pipe to the arbiter) stays.
    """

    def __init__(
        self,
        target: int,
        identifier: str,
        priority: int,
        level_prefix: bool,
        socket_path: str = "/run/systemd/journal/stdout",
    ) -> None:
        self.target = target
        self.identifier = identifier
        self.priority = priority
        self.level_prefix = level_prefix
        self.socket_path = socket_path

    def header(self) -> bytes:
        """What journald's stream socket expects first: identifier, unit id (empty), priority,
        level prefix, forwarding to syslog, kmsg, console."""
        return f"{self.identifier}\n\n{self.priority}\n{int(self.level_prefix)}\n0\n0\n0\n".encode()


class SpawnRequest(_Record):
    """Everything the child needs, decided by the arbiter; the spawner only executes it.

    `groups`: supplementary groups; None = leave as they are (or initgroups of `user` when given).
    `fd_targets`: target fd for each fd passed along with the request, in order; a stdio target
    (0, 1, 2) absent from it is /dev/null unless listed in `inherit`.
    `env_own_pid`: variables set in the child to its own pid (e.g. LISTEN_PID): names only.
    `journal_streams`: output fds the child connects to journald itself (direct mode).
    `cgroup`: a cgroup directory the child joins before anything else.
    """

    def __init__(
        self,
        executable: str,
        argv: tuple[str, ...],
        env: dict[str, str],
        cwd: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        groups: tuple[int, ...] | None = None,
        user: str | None = None,
        umask: int | None = None,
        rlimits: tuple[tuple[int, int, int], ...] = (),
        fd_targets: tuple[int, ...] = (),
        inherit: frozenset[int] = frozenset(),
        new_session: bool = True,
        env_own_pid: tuple[str, ...] = (),
        journal_streams: tuple[JournalStreamSetup, ...] = (),
        cgroup: str | None = None,
    ) -> None:
        self.executable = executable
        self.argv = argv
        # The spawner's child sets `env_own_pid` in its own (copy-on-write) copy.
        self.env = env
        self.cwd = cwd
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.user = user
        self.umask = umask
        self.rlimits = rlimits
        self.fd_targets = fd_targets
        self.inherit = inherit
        self.new_session = new_session
        self.env_own_pid = env_own_pid
        self.journal_streams = journal_streams
        self.cgroup = cgroup


# -- encoding ------------------------------------------------------------------------------------

# What a message may hold beyond builtin values, by the (module, name) the encoding records.
_CLASSES = {(cls.__module__, cls.__qualname__): cls for cls in (SpawnRequest, JournalStreamSetup)}


def encode(message: SpawnRequest | list[SpawnRequest]) -> bytes:
    """One message: a request, or a batch of them."""
    return _pickle.dumps(message)


class _Unpickler(_pickle.Unpickler):
    """Knows the classes of the protocol and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        found = _CLASSES.get((module, name))
        if found is not None:
            return found
        if (module, name) == ("builtins", "frozenset"):
            return frozenset
        raise _pickle.UnpicklingError(f"{module}.{name} is not part of the spawn protocol")


def decode(data: bytes) -> Any:
    """A message as `encode` made it (the spawner checks what it holds)."""
    return _Unpickler(io.BytesIO(data)).load()


# -- the child's exec-status report --------------------------------------------------------------

# The stages of a child's setup, as the configuration names them.
_STAGE_NAMES = {"exec": "exec", "chdir": "working_dir", "identity": "uid/gid"}


def exec_status_report(stage: str, code: int, text: str) -> bytes:
    """What a child whose setup or exec failed writes to its exec-status pipe."""
    return f"{stage}:{code}:{text}".encode(errors="replace")[:4000]


def parse_exec_status(data: bytes) -> str | None:
    """The child's report read from the exec-status pipe: None when exec succeeded."""
    if not data:
        return None
    stage, _, rest = data.decode(errors="replace").partition(":")
    code, _, text = rest.partition(":")
    where = _STAGE_NAMES.get(stage, stage)
    return f"{where}: {text}" + (f" (errno {code})" if code not in ("", "0") else "")


def exec_status_errno(data: bytes) -> int | None:
    """The errno of the child's report from the exec-status pipe, if it gave one."""
    code = data.decode(errors="replace").split(":", 2)[1:2]
    return int(code[0]) if code and code[0].isdecimal() and code[0] != "0" else None
