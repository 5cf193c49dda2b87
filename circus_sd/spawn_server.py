"""The spawner's program: clones each child and sets it up before exec, in a fresh interpreter.

Why a separate process: Python 3.11 offers only `preexec_fn` for work between fork and exec,
which forks the whole (large, threaded: pyzmq) arbiter for every child and is unsafe once threads
exist. Why a fresh interpreter (`python -IS`, this file and circus_sd/spawn_protocol.py as its
program, started by `circus_sd.spawner.fork_spawner`) rather than a fork of the arbiter: every
clone copies the page tables of the spawner's memory, every child pays a page fault for each page
it writes before its exec, and exec tears all of it down again. A bare interpreter holds less
than half the private memory (5 MB against 11 MB) and a third of the mappings of an arbiter that
has read its config; measured, 500 spawns through it took 0.36 s against 0.53 s. So this module
imports nothing beyond the interpreter's own modules (no `dataclasses`, no `pickle.py`) but the
protocol, whose source the spawner is given along with this one.

Each child is created with `clone(CLONE_PARENT)`, so its parent is the arbiter itself: the arbiter
gets SIGCHLD, owns the exit status (pidfd + waitid) and loses nothing if the spawner ever dies.

The messages are circus_sd/spawn_protocol.py's. A batch is cloned in one tight loop: after each
clone every page the spawner writes is copied, so it does its Python work (decoding, planning
each child's steps) for the whole batch before the first clone.
"""

from __future__ import annotations

import _pickle
import _socket  # (see _signal below)
import ctypes
import errno
import gc
import os
import resource
import sys

# Run in the spawner from its source too, under this same name (see fork_spawner).
from circus_sd.spawn_protocol import (
    EXEC_FAILED_STATUS,
    MAX_FDS_PER_MESSAGE,
    MAX_MESSAGE,
    JournalStreamSetup,
    SpawnRequest,
    decode,
    exec_status_report,
)

# typing and collections.abc would double the modules this process holds; annotations here are
# never evaluated (`from __future__ import annotations`), so mypy alone needs these.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable, Sequence
    from typing import Any

    # (stage named in a failure report, call, its arguments)
    Step = tuple[str, Callable[..., object], tuple[Any, ...]]
    # execve's path, argv and envp, as C arrays
    ExecArguments = tuple[bytes, ctypes.Array[ctypes.c_char_p], ctypes.Array[ctypes.c_char_p]]
    Planned = tuple[tuple[Step, ...], ExecArguments | None]
else:
    # Not signal.py nor socket.py: they import enum (socket.py also selectors, collections), more
    # memory and mappings that every clone copies and every child's exec tears down.
    import _signal

# The spawner's /dev/null, opened once, for children's unset stdio.
_devnull = -1
# The spawner's own umask and limits (what a child has unless told otherwise): steps that would
# set them to what they already are are skipped in the child.
_umask = -1
_limits: dict[int, tuple[int, int]] = {}


# -- creating the child --------------------------------------------------------------------------

_CLONE_PARENT = 0x00008000
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "i686": 120, "armv7l": 120, "riscv64": 220}.get(
    os.uname().machine
)
# PyDLL keeps the GIL held across the call: the child must come back holding it.
_libc = ctypes.PyDLL(None, use_errno=True)
_execve = _libc.execve


def plan(
    request: SpawnRequest, passed: Sequence[int], others: Sequence[int] = ()
) -> tuple[Step, ...]:
    """What the child does between its clone and its exec, in order: (stage, call, arguments).

    Decided here, before the clone, because the child pays a page copy for every page it
    writes (refcounts included): it only runs through these few tuples. Steps that would change
    nothing (a umask or limit the spawner already has, fds already inheritable) are left out.
    `others`: fds of the batch's later children (close-on-exec), closed first when a step may
    block (journald, NSS), so that a child stuck before its exec holds no other process's pipes.
    """
    steps: list[Step] = []
    if others and (request.journal_streams or request.user is not None):
        steps.append(("fds", _close_all, (others,)))
    if request.cgroup is not None:
        # First: no instruction of the child runs outside its leaf.
        steps.append(("cgroup", _join_cgroup, (request.cgroup,)))
    steps += _fd_steps(request, passed)
    if request.new_session:
        steps.append(("setsid", os.setsid, ()))
    if request.umask is not None and request.umask != _umask:
        steps.append(("umask", os.umask, (request.umask,)))
    for resource_id, soft, hard in request.rlimits:
        if resource_id not in _limits:
            _limits[resource_id] = resource.getrlimit(resource_id)
        if _limits[resource_id] != (soft, hard):
            steps.append(("rlimits", resource.setrlimit, (resource_id, (soft, hard))))
    if request.groups is not None:
        steps.append(("identity", os.setgroups, (list(request.groups),)))
    elif request.user is not None and request.gid is not None:
        steps.append(("identity", os.initgroups, (request.user, request.gid)))
    if request.gid is not None:
        steps.append(("identity", os.setgid, (request.gid,)))
    if request.uid is not None:
        steps.append(("identity", os.setuid, (request.uid,)))
    if request.cwd is not None:
        steps.append(("chdir", os.chdir, (request.cwd,)))
    if request.env_own_pid:
        steps.append(("exec", _set_own_pid, (request.env, request.env_own_pid)))
    for setup in request.journal_streams:
        steps.append(("exec", _connect_journal_stream, (setup,)))
    return tuple(steps)


def exec_arguments(request: SpawnRequest) -> ExecArguments | None:
    """execve's own arguments, made before the clone: os.execve would encode each argument and
    variable in the child, a page copy each. None where os.execve must do it (a variable set in
    the child, or anything it would refuse: its error is then the child's report)."""
    if request.env_own_pid or not request.argv or not request.argv[0]:
        return None
    try:
        path = os.fsencode(request.executable)
        args = [os.fsencode(arg) for arg in request.argv]
        variables = [(os.fsencode(k), os.fsencode(v)) for k, v in request.env.items()]
    except (TypeError, UnicodeError):
        return None
    if b"\0" in path or any(b"\0" in arg for arg in args) or any(
        not k or b"=" in k or b"\0" in k or b"\0" in v for k, v in variables
    ):
        return None
    argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
    envp = (ctypes.c_char_p * (len(variables) + 1))(*(k + b"=" + v for k, v in variables), None)
    return path, argv, envp


def _become_child(
    request: SpawnRequest, steps: tuple[Step, ...], execute: ExecArguments | None, status_fd: int
) -> None:
    """Runs in the new child: its planned steps, then exec. Never returns."""
    # No signal work here: the spawner has no ignored or blocked signal (see main), and exec
    # resets handled ones to their defaults.
    stage = "exec"
    try:
        for step_stage, step, arguments in steps:
            stage = step_stage
            step(*arguments)
        stage = "exec"
        if execute is not None:
            _execve(*execute)
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        os.execve(request.executable, request.argv, request.env)
    except BaseException as exc:
        code = exc.errno if isinstance(exc, OSError) and exc.errno else 0
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        try:
            os.write(status_fd, exec_status_report(stage, code, text))
        finally:
            os._exit(EXEC_FAILED_STATUS)


def _fd_steps(request: SpawnRequest, passed: Sequence[int]) -> list[Step]:
    """Passed fds to their targets (dup2 clears CLOEXEC), /dev/null on unset stdio."""
    targets = request.fd_targets
    nulled = [t for t in (0, 1, 2) if t not in targets and t not in request.inherit]
    sources = [*passed, _devnull] if nulled else passed
    if len(targets) != len(passed):
        raise ValueError(f"{len(passed)} fds for {len(targets)} targets")
    if any(fd in targets for fd in sources):
        # A source sits where another fd goes (or where itself goes: dup2 onto itself would
        # keep its close-on-exec flag): the child moves them out of the way first.
        return [("fds", _install_crossed_fds, (passed, targets, nulled, request.inherit))]
    pairs = zip(passed, targets, strict=True)
    steps: list[Step] = [("fds", os.dup2, (fd, target)) for fd, target in pairs]
    steps += [("fds", os.dup2, (_devnull, target)) for target in nulled]
    steps += [
        ("fds", os.set_inheritable, (target, True))
        for target in request.inherit
        if not _is_inheritable(target)
    ]
    return steps


def _is_inheritable(fd: int) -> bool:
    try:
        return os.get_inheritable(fd)
    except OSError:
        return True  # closed: the child's fd stays closed either way


def _install_crossed_fds(
    passed: Sequence[int], targets: Sequence[int], nulled: list[int], inherit: frozenset[int]
) -> None:
    highest = max([*targets, 2]) + 1
    moved = [_dupfd_cloexec(fd, highest) for fd in passed]
    devnull = _dupfd_cloexec(_devnull, highest) if nulled else _devnull
    for fd, target in zip(moved, targets, strict=True):
        os.dup2(fd, target)
    for target in nulled:
        os.dup2(devnull, target)
    for target in inherit:
        if not _is_inheritable(target):
            os.set_inheritable(target, True)


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)


def _join_cgroup(path: str) -> None:
    with open(os.path.join(path, "cgroup.procs"), "w") as procs:
        procs.write("0")


def _set_own_pid(env: dict[str, str], names: Sequence[str]) -> None:
    """The child's own copy of the environment (copy-on-write) gets its pid."""
    own_pid = str(os.getpid())
    for name in names:
        env[name] = own_pid


def _dupfd_cloexec(fd: int, lowest: int) -> int:
    import fcntl  # only in a child whose fds collide

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)


def _connect_journal_stream(setup: JournalStreamSetup) -> None:
    """Replace fd `setup.target` by a journald stream connection; keep it if that fails.

    As sd_journal_stream_fd does, in the child just before exec, so that journald records the
    child's own pid (peer credentials are taken at connect time).
    """
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    except OSError:
        return
    try:
        sock.connect(setup.socket_path)
        sock.shutdown(_socket.SHUT_RD)
        try:  # noqa: SIM105 (contextlib would be one more module here)
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, 8 << 20)
        except OSError:
            pass
        sock.sendall(setup.header())
        os.dup2(sock.fileno(), setup.target, inheritable=True)
    except OSError:
        pass  # the pipe to the arbiter stays at `target`
    finally:
        sock.close()


# -- the spawner's loop --------------------------------------------------------------------------


def serve(sock: _socket.socket) -> None:
    """Answer spawn requests until the arbiter closes its end."""
    ancillary = _socket.CMSG_SPACE(MAX_FDS_PER_MESSAGE * 4)
    while True:
        try:
            # recvmsg itself: Python 3.11's recv_fds drops its flags argument (MSG_CMSG_CLOEXEC),
            # and every child would inherit a stray copy of each fd passed to it.
            data, ancdata, _flags, _addr = sock.recvmsg(
                MAX_MESSAGE, ancillary, _socket.MSG_CMSG_CLOEXEC
            )
        except InterruptedError:
            continue
        fds = _received_fds(ancdata)
        if not data:
            return
        reply: Any
        owned = fds  # closed here once answered, unless a spawn took them (it closes its own)
        try:
            decoded = decode(data)
            if isinstance(decoded, list):
                owned = []
                reply, reply_fds = _spawn_batch(decoded, fds)
            elif isinstance(decoded, SpawnRequest):
                owned = []
                replies, reply_fds = _spawn_batch([decoded], fds)
                reply = replies[0]
            else:
                raise ValueError("not a spawn request")
        except Exception as exc:
            reply, reply_fds = _error_reply(exc), []
        try:
            _send_fds(sock, _pickle.dumps(reply), reply_fds)
        finally:
            for fd in (*owned, *reply_fds):
                os.close(fd)


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(
                int.from_bytes(payload[i : i + 4], sys.byteorder, signed=True)
                for i in range(0, usable, 4)
            )
    return fds


def _send_fds(sock: _socket.socket, data: bytes, fds: Sequence[int]) -> None:
    """socket.send_fds, without socket.py (and its selectors, collections, enum, array)."""
    rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
    sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)] if fds else [])


def _spawn_batch(
    requests: list[Any], fds: list[int]
) -> tuple[list[tuple[Any, ...]], list[int]]:
    """Clone a child for each request; the fds are each request's `fd_targets` in turn.

    Every plan is made before the first clone: after a clone, each page the spawner writes is
    copied (while that child has not exec'd) or at least faulted. Closes every fd of `fds`: each
    request's own as soon as its child has its copies.
    """
    closed = 0  # fds[:closed] are closed
    try:
        if not all(isinstance(r, SpawnRequest) for r in requests):
            raise ValueError("not a spawn request")
        targets = sum(len(r.fd_targets) for r in requests)
        if targets != len(fds):
            raise ValueError(f"{len(fds)} fds for {targets} targets")
        if _SYS_CLONE is None:
            raise OSError(errno.ENOSYS, "clone(CLONE_PARENT) not known on this machine")
        planned: list[tuple[SpawnRequest, list[int], Planned | Exception]] = []
        start = 0
        for request in requests:
            end = start + len(request.fd_targets)
            passed = fds[start:end]
            try:
                steps = plan(request, passed, fds[end:])
                planned.append((request, passed, (steps, exec_arguments(request))))
            except Exception as exc:  # this request's answer
                planned.append((request, passed, exc))
            start = end
        replies: list[tuple[Any, ...]] = []
        status_fds: list[int] = []
        # Between two clones, as little as can be: locals, no call of ours (measured: 40 page
        # faults per child here, against 57 through a function per clone).
        pipe2, close, syscall = os.pipe2, os.close, _libc.syscall
        flags, cloexec = _CLONE_PARENT | _signal.SIGCHLD, os.O_CLOEXEC
        for request, passed, ready in planned:
            if isinstance(ready, Exception):
                replies.append(_error_reply(ready))
            else:
                try:
                    status_read, status_write = pipe2(cloexec)
                except OSError as exc:
                    replies.append(_error_reply(exc))
                else:
                    # fork(), but the child's parent is our parent, the arbiter.
                    pid = syscall(_SYS_CLONE, flags, 0, 0, 0, 0)
                    if pid == 0:
                        _become_child(request, *ready, status_write)
                    close(status_write)
                    if pid > 0:
                        status_fds.append(status_read)
                        replies.append(("ok", pid))
                    else:
                        close(status_read)
                        code = ctypes.get_errno()
                        replies.append(("error", code, os.strerror(code)))
            for fd in passed:
                close(fd)
            closed += len(passed)
        return replies, status_fds
    finally:
        for fd in fds[closed:]:
            os.close(fd)


def _error_reply(exc: Exception) -> tuple[str, int, str]:
    code = getattr(exc, "errno", 0) or 0
    return "error", code, exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _ignore_signal(signum: int, frame: object) -> None:
    pass


def _look_like(cmdline: bytes, comm: bytes) -> None:
    """Show the arbiter's command line and name, as the forked spawner of old did: `ps` shows
    one program, and tools tell the spawner from the supervised processes by it.

    fork_spawner padded our argv to the very length of `cmdline`, so the kernel's argument area
    (on our stack) can take it in place; anything else leaves the true one.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl(15, ctypes.c_char_p(comm[:15]), 0, 0, 0)  # PR_SET_NAME
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        # Fields 48 and 49 of proc(5): arg_start, arg_end; the list starts at field 3.
        start, end = int(fields[45]), int(fields[46])
    except (OSError, IndexError, ValueError):
        return
    if end - start == len(cmdline) and cmdline.endswith(b"\0"):
        ctypes.memmove(start, cmdline, len(cmdline))


def main(sock_fd: int, cmdline: bytes = b"", comm: bytes = b"") -> None:
    """The spawner: serve the arbiter's socket `sock_fd` until it closes it; never returns."""
    global _devnull, _umask
    if cmdline:
        _look_like(cmdline, comm)
    # The arbiter decides when we stop (EOF), so keyboard and service-manager signals get a
    # handler that does nothing; a handled signal, unlike an ignored one, is back to its default
    # in the exec'd child. SIGPIPE and SIGXFSZ (ignored by Python) go back to their defaults.
    for signum in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT):
        _signal.signal(signum, _ignore_signal)
    for signum in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(signum, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
    os.closerange(3, sock_fd)
    os.closerange(sock_fd + 1, 1 << 20)
    os.set_inheritable(sock_fd, False)  # inherited through our exec; no child's business
    sock = _socket.socket(fileno=sock_fd)
    _devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    # Binds dup2 here, once: a symbol first called in a child is looked up by the dynamic
    # linker there, again in every child (perf showed _dl_fixup and its strcmp in each one).
    os.dup2(_devnull, _devnull)
    _umask = os.umask(0)
    os.umask(_umask)
    # What exists now is never collected here: a collection would write to every object's
    # header, and each page written after a clone is copied (in the spawner and the child).
    gc.freeze()
    try:
        serve(sock)
    finally:
        os._exit(0)
