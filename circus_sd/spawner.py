"""The spawner's protocol, as the arbiter sees it: what a child needs, and starting the spawner.

The spawner is a small single-threaded process that creates each child with clone(CLONE_PARENT)
and sets it up before exec; its program, and the protocol, are in circus_sd/spawn_server.py.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from collections.abc import Mapping

from circus_sd import spawn_server
from circus_sd.spawn_server import EXEC_FAILED_STATUS, MAX_FDS_PER_MESSAGE, MAX_MESSAGE

__all__ = ["EXEC_FAILED_STATUS", "MAX_FDS_PER_MESSAGE", "MAX_MESSAGE"]


@dataclasses.dataclass(frozen=True)
class JournalStreamSetup:
    """Connect the child's fd `target` to journald's stream socket, as sd_journal_stream_fd does.

    Done in the child just before exec, so that journald records the child's own pid (peer
    credentials are taken at connect time). If the socket cannot be reached, the fd already at
    `target` (a pipe to the arbiter) stays.
    """

    target: int
    identifier: str
    priority: int
    level_prefix: bool
    socket_path: str = "/run/systemd/journal/stdout"

    def header(self) -> bytes:
        return spawn_server.journal_header(self.identifier, self.priority, self.level_prefix)


@dataclasses.dataclass(frozen=True)
class SpawnRequest:
    """Everything the child needs, decided by the arbiter; the spawner only executes it."""

    executable: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None = None
    uid: int | None = None
    gid: int | None = None
    # Supplementary groups; None = leave as they are (or initgroups of `user` when given).
    groups: tuple[int, ...] | None = None
    user: str | None = None
    umask: int | None = None
    rlimits: tuple[tuple[int, int, int], ...] = ()
    # Target fd for each fd passed along with the request, in order. A stdio target (0, 1, 2)
    # absent from this list is /dev/null unless listed in `inherit`.
    fd_targets: tuple[int, ...] = ()
    inherit: frozenset[int] = frozenset()
    new_session: bool = True
    # Extra environment computed in the child (e.g. LISTEN_PID=<own pid>): names only.
    env_own_pid: tuple[str, ...] = ()
    # Output fds the child connects to journald itself (JournalStream direct mode).
    journal_streams: tuple[JournalStreamSetup, ...] = ()
    # A cgroup directory the child joins before anything else (writes 0 to its cgroup.procs).
    cgroup: str | None = None


class SpawnError(OSError):
    """The spawner could not create the process (e.g. EAGAIN from fork)."""


class SpawnerLost(SpawnError):
    """The spawner was lost (it exited, was killed, or hung) before it answered the request: not
    the program's failure, nor the machine's shortage. Another spawner is started; the request
    is deferred, not counted as a failed start. (EPIPE as its errno.)"""


# -- starting the spawner ------------------------------------------------------------------------


def fork_spawner() -> tuple[int, socket.socket]:
    """Start the spawner; returns its pid and our socket end.

    It is a fresh interpreter (`python -IS`) whose program, circus_sd/spawn_server.py, comes
    through a pipe: no copy of this process's memory, which each clone would copy again. Started
    with posix_spawn, not a fork of this process, so that it may be called at any time, threads
    or not: the arbiter starts another spawner when it loses one.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (ours, theirs):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    program_read, program_write = os.pipe()
    theirs_fd = theirs.fileno()
    cmdline, comm = _own_names()
    argv, fits = _spawner_argv(program_read, len(cmdline))
    if not fits:  # our own command line is too short to be shown by the spawner too
        cmdline = comm = b""
    try:
        # The spawner's two fds; every other fd of ours is close-on-exec (and it closes any
        # other it finds).
        os.set_inheritable(theirs_fd, True)
        os.set_inheritable(program_read, True)
        pid = os.posix_spawn(sys.executable, argv, os.environ)
    except OSError:
        ours.close()
        os.close(program_write)
        raise
    finally:
        theirs.close()
        os.close(program_read)
    with open(spawn_server.__file__, "rb") as source:
        program = source.read()
    program += b"\nmain(%d, %r, %r)\n" % (theirs_fd, cmdline, comm)
    try:
        view = memoryview(program)
        while view:
            view = view[os.write(program_write, view) :]
    except BrokenPipeError:
        pass  # it could not start: its end of the socket is closed, which the arbiter notices
    finally:
        os.close(program_write)
    return pid, ours


# Isolated (no PYTHON* variables, no user site), no site module: nothing but the standard library.
_FLAGS = "-IS"


def _own_names() -> tuple[bytes, bytes]:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            cmdline = f.read()
        with open("/proc/self/comm", "rb") as f:
            comm = f.read().rstrip(b"\n")
    except OSError:
        return b"", b""
    return cmdline, comm


def _spawner_argv(program_fd: int, length: int) -> tuple[list[str], bool]:
    """The spawner's argv, padded to `length` bytes (NULs included) so that it can show our own
    command line in place (spawn_server._look_like); False if it cannot be made that short."""
    argv = [sys.executable, _FLAGS, f"/dev/fd/{program_fd}"]
    if sys.flags.utf8_mode:
        argv.insert(1, "-Xutf8")
    used = sum(len(os.fsencode(arg)) + 1 for arg in argv)
    if length == used:
        return argv, True
    if length < used + 1:
        return argv, False
    return [*argv, "-" * (length - used - 1)], True


def parse_exec_status(data: bytes) -> str | None:
    """The child's report read from the exec-status pipe: None when exec succeeded."""
    if not data:
        return None
    stage, _, rest = data.decode(errors="replace").partition(":")
    code, _, text = rest.partition(":")
    where = {"exec": "exec", "chdir": "working_dir", "identity": "uid/gid"}.get(stage, stage)
    return f"{where}: {text}" + (f" (errno {code})" if code not in ("", "0") else "")


def exec_status_errno(data: bytes) -> int | None:
    """The errno of the child's report from the exec-status pipe, if it gave one."""
    code = data.decode(errors="replace").split(":", 2)[1:2]
    return int(code[0]) if code and code[0].isdecimal() and code[0] != "0" else None
