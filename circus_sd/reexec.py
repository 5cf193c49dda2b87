"""Re-executing the arbiter in its own process: the new program's check, then execve.

The handover (handover.py) goes in a memfd: no file another user could swap, nothing left on
disk. The next program is the command this arbiter was started with, so an upgraded package's
code is what runs: `python3 /usr/bin/circus-sd /etc/circus-sd/circus.ini`, read again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from typing import NoReturn

from circus_sd import handover as handovers

# The memfd holding the handover, for the next program (popped at its start).
HANDOVER_FD_ENV = "CIRCUS_SD_HANDOVER_FD"
# Set for the check: read the handover in this fd, say whether it can be used, exit.
CHECK_FD_ENV = "CIRCUS_SD_HANDOVER_CHECK_FD"
CHECK_TIMEOUT = 30.0
# Re-executions after a crash: at most this many within the window, then exit as before.
CRASH_REEXECS = 3
CRASH_WINDOW = 60.0


def command() -> list[str]:
    """How this arbiter was started: the interpreter, its options, the script, the arguments."""
    return [sys.executable, *sys.orig_argv[1:]]


MEMFD_NAME = "circus-sd-handover"
# Sealed once written: a process of the same user could otherwise rewrite it through
# /proc/ARBITER/fd before the next program reads it (and that program unpickles it).
SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def _memfd(data: bytes) -> int:
    fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_fd(fd: int) -> bytes:
    """What a sealed handover memfd holds; OSError if `fd` is anything else."""
    if os.readlink(f"/proc/self/fd/{fd}") != f"/memfd:{MEMFD_NAME} (deleted)":
        raise OSError(f"fd {fd} is not a circus-sd handover")
    if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & SEALS != SEALS:
        raise OSError(f"fd {fd}: the handover is not sealed")
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


class Check:
    """The installed circus-sd run on the handover, as a separate process: `start` returns at
    once (the caller records the pid as its own, so that no stray reaping takes its exit),
    `outcome` waits for it (run it in a thread)."""

    def __init__(self, data: bytes) -> None:
        import subprocess  # not at start: a re-execution is rare

        self._subprocess = subprocess
        self._fd = _memfd(data)
        env = {**os.environ, CHECK_FD_ENV: str(self._fd)}
        env.pop(HANDOVER_FD_ENV, None)
        try:
            self.process = subprocess.Popen(
                command(), env=env, pass_fds=(self._fd,), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
        except BaseException:
            os.close(self._fd)
            raise

    def outcome(self) -> str | None:
        """None if the installed circus-sd can use the state, else why not (what it said)."""
        try:
            said, _ = self.process.communicate(timeout=CHECK_TIMEOUT)
        except self._subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            return f"the installed circus-sd did not answer within {CHECK_TIMEOUT:g}s"
        finally:
            os.close(self._fd)
        if self.process.returncode == 0:
            return None
        lines = said.decode(errors="replace").strip().splitlines()
        status = self.process.returncode
        return lines[-1] if lines else f"the installed circus-sd exited with {status}"


def answer_check() -> int:
    """The check's side, in the new program: exit status 0 if the handover can be used."""
    try:
        fd = int(os.environ.pop(CHECK_FD_ENV))
        data = _read_fd(fd)
    except (ValueError, OSError) as exc:
        print(f"circus-sd: cannot read the saved state: {exc}", file=sys.stderr)
        return 1
    try:
        handovers.load(data)
    except handovers.HandoverError as exc:
        print(f"circus-sd: {exc}", file=sys.stderr)
        return 1
    try:
        _import_run_path()
    except Exception as exc:  # a broken install: a module missing, or one that fails to load
        print(f"circus-sd: the installed code cannot run: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    return 0


def _import_run_path() -> None:
    """Every module a re-executed arbiter loads before it answers (not only what unpickling
    needs): a broken install is found here, while the old program still runs."""
    import importlib

    for name in RUN_PATH:
        importlib.import_module(name)


RUN_PATH = (
    "asyncio",
    "zmq",
    "zmq.asyncio",
    "psutil",
    "circus_sd.arbiter",
    "circus_sd.launcher",
    "circus_sd.spawner",
    "circus_sd.control.server",
    "circus_sd.control.handlers",
    "circus_sd.output.router",
    "circus_sd.logging_setup",
    "circus_sd.cgroups",
    "circus_sd.sockets",
    "circus_sd.systemd_notify",
    "circus_sd.pidfile",
)


def execute(data: bytes, fds: list[int], environ: dict[str, str]) -> NoReturn:
    """Replace this program with the installed one, handing it `data` and `fds`. The memfd
    starts with one JSON line listing `fds`: a program that cannot read the rest still knows
    what to close (the endpoints' locks among them)."""
    fd = _memfd(json.dumps({"fds": fds}).encode() + b"\n" + data)
    for kept in (fd, *fds):
        os.set_inheritable(kept, True)
    env = {**os.environ, **environ, HANDOVER_FD_ENV: str(fd)}
    env.pop(CHECK_FD_ENV, None)
    argv = command()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os.execve(argv[0], argv, env)


def take_handover() -> handovers.Handover | None:
    """At start: the handover of the previous program of this arbiter, if it re-executed.
    HandoverError if there is one this program cannot use."""
    value = os.environ.pop(HANDOVER_FD_ENV, None)
    if value is None:
        return None
    try:
        fd = int(value)
        content = _read_fd(fd)
        os.close(fd)
        header, _, data = content.partition(b"\n")
        fds = tuple(int(n) for n in json.loads(header)["fds"])
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise handovers.HandoverError(f"cannot read the saved state: {exc}") from None
    try:
        if os.environ.get("CIRCUS_SD_INJECT_FAULT") == "handover":  # the tests of the fallback
            raise handovers.HandoverError("injected fault at handover (CIRCUS_SD_INJECT_FAULT)")
        return handovers.load(data)
    except handovers.HandoverError as exc:
        raise handovers.HandoverError(str(exc), fds) from None


def crash_budget_left(previous: list[float], now: float) -> bool:
    """Whether one more re-execution after a crash is allowed (a few a minute)."""
    recent = [t for t in previous if now - t < CRASH_WINDOW]
    return len(recent) < CRASH_REEXECS
