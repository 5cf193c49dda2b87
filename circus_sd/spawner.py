"""The spawner: a small single-threaded process that forks children and sets them up before exec.

Why a separate process: Python 3.11 offers only `preexec_fn` for work between fork and exec,
which forks the whole (large, threaded: pyzmq) arbiter for every child and is unsafe once threads
exist. The spawner is forked at start-up, before any thread, and stays small. It creates each
child with `clone(CLONE_PARENT)`, so the child's parent is the arbiter itself: the arbiter gets
SIGCHLD, owns the exit status (pidfd + waitid) and loses nothing if the spawner ever dies.

Protocol, over a SOCK_SEQPACKET socketpair: the arbiter sends a pickled `SpawnRequest` with the
child's stdio fds attached (SCM_RIGHTS); the spawner answers, in order, with ("ok", pid) plus the
read end of the child's exec-status pipe, or ("error", errno, message) when it could not fork.
The pipe gives EOF when exec succeeded, or a line "stage:errno:message" when setup or exec failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import os
import pickle
import platform
import resource
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

# The child reports a setup/exec failure with this status (as a shell does for "cannot execute").
EXEC_FAILED_STATUS = 127
_MAX_MESSAGE = 1 << 20
# The spawner's /dev/null, opened once, for children's unset stdio.
_devnull = -1


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
        # identifier, unit id (empty), priority, level prefix, syslog, kmsg, console forwarding.
        return (
            f"{self.identifier}\n\n{self.priority}\n{int(self.level_prefix)}\n0\n0\n0\n"
        ).encode()


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


# -- creating the child --------------------------------------------------------------------------

_CLONE_PARENT = 0x00008000
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "i686": 120, "armv7l": 120, "riscv64": 220}.get(
    platform.machine()
)
# PyDLL keeps the GIL held across the call: the child must come back holding it.
_libc = ctypes.PyDLL(None, use_errno=True)


def _clone_as_sibling() -> int:
    """fork(), but the child's parent is our parent (the arbiter). Returns 0 in the child."""
    if _SYS_CLONE is None:
        raise OSError(errno.ENOSYS, "clone(CLONE_PARENT) not known on this machine")
    pid = int(_libc.syscall(_SYS_CLONE, _CLONE_PARENT | signal.SIGCHLD, 0, 0, 0, 0))
    if pid < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return pid


def _become_child(request: SpawnRequest, passed: Sequence[int], status_fd: int) -> None:
    """Runs in the new child: set up identity, limits and fds, then exec. Never returns."""
    # No signal work here: the spawner has no ignored or blocked signal (see _spawner_main),
    # and exec resets handled ones to their defaults.
    stage = "cgroup"
    try:
        if request.cgroup is not None:
            # First: no instruction of the child runs outside its leaf.
            with open(os.path.join(request.cgroup, "cgroup.procs"), "w") as procs:
                procs.write("0")
        stage = "fds"
        _install_fds(request, passed)
        if request.new_session:
            stage = "setsid"
            os.setsid()
        if request.umask is not None:
            os.umask(request.umask)
        stage = "rlimits"
        for resource_id, soft, hard in request.rlimits:
            resource.setrlimit(resource_id, (soft, hard))
        stage = "identity"
        if request.groups is not None:
            os.setgroups(list(request.groups))
        elif request.user is not None and request.gid is not None:
            os.initgroups(request.user, request.gid)
        if request.gid is not None:
            os.setgid(request.gid)
        if request.uid is not None:
            os.setuid(request.uid)
        if request.cwd is not None:
            stage = "chdir"
            os.chdir(request.cwd)
        env = dict(request.env)
        own_pid = str(os.getpid())
        for name in request.env_own_pid:
            env[name] = own_pid
        for setup in request.journal_streams:
            _connect_journal_stream(setup)
        stage = "exec"
        os.execve(request.executable, list(request.argv), env)
    except BaseException as exc:
        code = exc.errno if isinstance(exc, OSError) and exc.errno else 0
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        try:
            os.write(status_fd, f"{stage}:{code}:{text}".encode(errors="replace")[:4000])
        finally:
            os._exit(EXEC_FAILED_STATUS)


def _install_fds(request: SpawnRequest, passed: Sequence[int]) -> None:
    """Put passed fds at their targets (dup2 clears CLOEXEC); /dev/null on unset stdio."""
    highest = max([*request.fd_targets, 2]) + 1
    # Move sources out of the way first, so that no dup2 overwrites a source not yet placed.
    parked = [_fcntl_dupfd_cloexec(fd, highest) for fd in passed]
    for fd, target in zip(parked, request.fd_targets, strict=True):
        os.dup2(fd, target, inheritable=True)
    for target in {0, 1, 2} - set(request.fd_targets) - request.inherit:
        os.dup2(_devnull, target, inheritable=True)
    for target in request.inherit:
        os.set_inheritable(target, True)


def _connect_journal_stream(setup: JournalStreamSetup) -> None:
    """Replace fd `setup.target` by a journald stream connection; keep it if that fails."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    except OSError:
        return
    try:
        sock.connect(setup.socket_path)
        sock.shutdown(socket.SHUT_RD)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        sock.sendall(setup.header())
        os.dup2(sock.fileno(), setup.target, inheritable=True)
    except OSError:
        pass  # the pipe to the arbiter stays at `target`
    finally:
        sock.close()


def _ignore_signal(signum: int, frame: object) -> None:
    pass


def _fcntl_dupfd_cloexec(fd: int, lowest: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)


# -- the spawner's loop --------------------------------------------------------------------------


def _serve(sock: socket.socket) -> None:
    """Answer spawn requests until the arbiter closes its end."""
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(
                sock, _MAX_MESSAGE, 64, socket.MSG_CMSG_CLOEXEC
            )
        except InterruptedError:
            continue
        # Python 3.11's recv_fds drops its flags argument (MSG_CMSG_CLOEXEC): without this, every
        # child would inherit a stray copy of each fd passed to it (pipes, sockets).
        for fd in fds:
            os.set_inheritable(fd, False)
        if not data:
            return
        try:
            request = pickle.loads(data)
            assert isinstance(request, SpawnRequest)
            reply, reply_fds = _spawn_one(request, fds)
        except Exception as exc:
            reply, reply_fds = ("error", getattr(exc, "errno", 0) or 0, str(exc)), []
        try:
            socket.send_fds(sock, [pickle.dumps(reply)], reply_fds)
        finally:
            for fd in (*fds, *reply_fds):
                os.close(fd)


def _spawn_one(request: SpawnRequest, passed: Sequence[int]) -> tuple[tuple[Any, ...], list[int]]:
    status_read, status_write = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _clone_as_sibling()
    except OSError as exc:
        os.close(status_read)
        os.close(status_write)
        return ("error", exc.errno or 0, exc.strerror or str(exc)), []
    if pid == 0:
        _become_child(request, passed, status_write)
    os.close(status_write)
    return ("ok", pid), [status_read]


def _spawner_main(sock: socket.socket) -> None:
    global _devnull
    # The arbiter decides when we stop (EOF), so keyboard and service-manager signals get a
    # handler that does nothing; a handled signal, unlike an ignored one, is back to its default
    # in the exec'd child. SIGPIPE and SIGXFSZ (ignored by Python) go back to their defaults.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, _ignore_signal)
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    keep = sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 20)
    _devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        _serve(sock)
    finally:
        os._exit(0)


def fork_spawner() -> tuple[int, socket.socket]:
    """Fork the spawner; call before any thread exists. Returns its pid and our socket end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (ours, theirs):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        ours.close()
        _spawner_main(theirs)
    theirs.close()
    return pid, ours


def parse_exec_status(data: bytes) -> str | None:
    """The child's report read from the exec-status pipe: None when exec succeeded."""
    if not data:
        return None
    stage, _, rest = data.decode(errors="replace").partition(":")
    code, _, text = rest.partition(":")
    where = {"exec": "exec", "chdir": "working_dir", "identity": "uid/gid"}.get(stage, stage)
    return f"{where}: {text}" + (f" (errno {code})" if code not in ("", "0") else "")
