"""Security properties not covered by the access tests (test_control_access.py): no shell unless
`shell = true`, the owners and modes of every file the arbiter creates, no secret of the
arbiter's environment and no descriptor of its own reaching a child."""

from __future__ import annotations

import os
import pwd
import shlex
import stat
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from arbiter_harness import (
    CHILD_PYTHON,
    CHILDREN,
    Arbiter,
    Circus,
    child_command,
    report_command,
    wait_until,
)
from control_helpers import real_pids, wait_count

pytestmark = pytest.mark.timeout(30)

NOBODY = pwd.getpwnam("nobody")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _owner(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().partition("=")[::2] for item in raw.split(b"\0") if item)


# -- no shell ------------------------------------------------------------------------------------


def test_a_command_runs_without_a_shell_unless_shell_is_true(circus: Circus) -> None:
    """Shell syntax in cmd, args and substituted values reaches the program as literal words
    (report.py records its argv); with `shell = true` the same syntax is run by /bin/sh."""
    tmp = circus.tmp
    # (` ;` after a blank would start a comment, as in Circus's INI reader: `x;` stays a word.)
    hostile = (
        f"x;touch {tmp}/pwned-semicolon $(touch {tmp}/pwned-subst) `touch {tmp}/pwned-tick` "
        f"&& touch {tmp}/pwned-and || touch {tmp}/pwned-or | tee {tmp}/pwned-pipe "
        f"> {tmp}/pwned-redirect * ~ $HOME {{a,b}}"
    )
    args = f"'$(touch {tmp}/pwned-args)' \"; touch {tmp}/pwned-args2\""
    config = circus.write_config(f"""
        [watcher:literal]
        cmd = {report_command(tmp, "literal")} {hostile} $(circus.env.sneaky)
        args = {args}

        [watcher:shelled]
        cmd = touch {tmp}/shell-ran && exec {report_command(tmp, "shelled")}
        shell = true

        [env:literal]
        sneaky = x; touch {tmp}/pwned-env
        """)
    circus.start(config)
    literal = circus.reports.wait("literal", 1)
    circus.reports.wait("shelled", 1)

    words = shlex.split(f"{hostile} x; touch {tmp}/pwned-env") + shlex.split(args)
    assert literal["argv"] == [str(tmp), "literal", "1", *words]
    assert (tmp / "shell-ran").exists(), "shell = true runs the line through /bin/sh"
    assert sorted(p.name for p in tmp.glob("pwned*")) == [], "a shell ran part of the command"
    assert literal["env"]["sneaky"] == f"x; touch {tmp}/pwned-env"


# -- files it creates ----------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_it_creates_have_the_documented_owners_and_modes(
    circus: Circus, umask: int
) -> None:
    """Control and events sockets 0600 (their lock files too), in a 0700 directory; the pidfile
    and FileStream logs 0666 minus the umask, owned by the arbiter's user, whoever the process
    runs as; each process's NOTIFY_SOCKET 0600 and owned by the process's user, in a 0711
    directory, so that no other user can speak for it."""
    world = circus.world_dir()
    run = circus.tmp / "run"
    notifier = f"{CHILD_PYTHON} -S -E {CHILDREN / 'notifier.py'} 0 -1 5"
    config = circus.tmp / "circus.ini"
    config.write_text(textwrap.dedent(f"""
        [circus]
        endpoint = ipc://{run}/control.sock
        pubsub_endpoint = ipc://{run}/events.sock
        pidfile = {circus.tmp}/circus.pid
        umask = {umask:03o}

        [watcher:mine]
        cmd = {notifier} {circus.tmp} mine
        notify = true

        [watcher:theirs]
        cmd = {notifier} {world} theirs
        notify = true
        uid = nobody

        [watcher:logs]
        cmd = {child_command("writer.py", circus.tmp, "logs", "--lines", "5", "--stderr")}
        stdout_stream.filename = {circus.tmp}/logs/out.log
        stderr_stream.class = FileStream
        stderr_stream.filename = {circus.tmp}/logs/err.log

        [watcher:their-logs]
        cmd = {child_command("writer.py", world, "their-logs", "--lines", "5")}
        uid = nobody
        working_dir = {world}
        stdout_stream.filename = {world}/their.log
        """))
    (circus.tmp / "logs").mkdir()
    arbiter = circus.start(config)
    me = (os.geteuid(), os.getegid())
    files = 0o666 & ~umask

    assert _mode(run) == 0o700 and _owner(run) == me
    for name in ("control.sock", "events.sock"):
        assert stat.S_ISSOCK((run / name).stat().st_mode)
        assert (_mode(run / name), _owner(run / name)) == (0o600, me), name
        lock = run / f"{name}.lock"
        assert (_mode(lock), _owner(lock)) == (0o600, me), lock
    pidfile = circus.tmp / "circus.pid"
    assert (_mode(pidfile), _owner(pidfile)) == (files, me)
    assert pidfile.read_text() == f"{arbiter.pid}\n"

    mine = wait_count(arbiter, "mine", 1)[0]
    theirs = wait_count(arbiter, "theirs", 1)[0]
    for log in (circus.tmp / "logs" / "out.log", circus.tmp / "logs" / "err.log",
                world / "their.log"):
        wait_until(log.exists, 5, f"{log} to be created", circus.log_tails)
        assert (_mode(log), _owner(log)) == (files, me), log

    sockets = {pid: Path(_environ(pid)["NOTIFY_SOCKET"]) for pid in (mine, theirs)}
    assert sockets[mine] != sockets[theirs]
    assert sockets[mine].parent == sockets[theirs].parent
    directory = sockets[mine].parent
    assert (_mode(directory), _owner(directory)) == (0o711, me)
    assert (_mode(sockets[mine]), _owner(sockets[mine])[0]) == (0o600, me[0])
    assert (_mode(sockets[theirs]), _owner(sockets[theirs])[0]) == (0o600, NOBODY.pw_uid)
    # The other user cannot speak for a process that is not its own.
    assert not _can_send_as_nobody(sockets[mine])
    assert _can_send_as_nobody(sockets[theirs])

    assert arbiter.stop() == 0
    assert not pidfile.exists(), "the pidfile outlived its arbiter"
    assert not directory.exists(), "the notify sockets outlived their arbiter"


def _can_send_as_nobody(path: Path) -> bool:
    script = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "try:\n    s.sendto(b'STATUS=probe', sys.argv[1])\n"
        "except PermissionError:\n    sys.exit(13)\n"
    )
    result = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         CHILD_PYTHON, "-I", "-c", script, str(path)],
        capture_output=True, text=True, timeout=10, cwd="/", check=False,
    )
    assert result.returncode in (0, 13), result.stderr
    return result.returncode == 0


# -- what a child inherits -----------------------------------------------------------------------

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "DATABASE_PASSWORD": "hunter2",
    "GITHUB_TOKEN": "ghp_0123456789abcdef",
    "CIRCUSCTL_CURVE_KEY": "/secret/client.key_secret",
}
# Set as systemd would for the arbiter itself (a NOTIFY_SOCKET nobody listens on).
SYSTEMD = {
    "WATCHDOG_USEC": "30000000",
    "WATCHDOG_PID": "1",
    "LISTEN_FDS": "0",
    "LISTEN_PID": "1",
    "LISTEN_FDNAMES": "",
}


def test_the_arbiters_secrets_reach_no_child_unless_copy_env(circus: Circus) -> None:
    """Only `copy_env` copies the arbiter's environment (as documented); `copy_path` copies
    PATH (and PYTHONPATH) alone; the variables about the arbiter's own relation to systemd
    never reach a child, even with copy_env."""
    config = circus.write_config(f"""
        [watcher:plain]
        cmd = {report_command(circus.tmp, "plain")}

        [watcher:path]
        cmd = {report_command(circus.tmp, "path")}
        copy_path = true

        [watcher:copied]
        cmd = {report_command(circus.tmp, "copied")}
        copy_env = true
        """)
    notify = circus.tmp / "systemd-notify.sock"
    arbiter_env = {**os.environ, **SECRETS, **SYSTEMD, "NOTIFY_SOCKET": str(notify)}
    arbiter = circus.start(config, env=arbiter_env)
    envs: dict[str, dict[str, Any]] = {
        name: circus.reports.wait(name, 1)["env"] for name in ("plain", "path", "copied")
    }

    # CIRCUS_WID, and the marks a next arbiter finds its workers by (README "Live upgrade").
    marks = {"CIRCUS_WID", "CIRCUS_SD_ARBITER", "CIRCUS_SD_WATCHER"}
    assert set(envs["plain"]) == marks
    assert set(envs["path"]) == {"PATH", "PYTHONPATH", *marks}
    for name, value in SECRETS.items():
        assert envs["copied"][name] == value, "copy_env copies the environment, as documented"
        for other in ("plain", "path"):
            assert value not in "\n".join(f"{k}={v}" for k, v in envs[other].items()), other
    for env in envs.values():
        assert not set(env) & {"NOTIFY_SOCKET", *SYSTEMD}, env
    assert arbiter.running()


def test_a_child_inherits_no_descriptor_of_the_arbiter(circus: Circus) -> None:
    """Checked in the kernel's table of each child: fds 0, 1 and 2 only, whatever the arbiter
    holds (ZMQ sockets, pidfds, pipes of other processes, log files, notify sockets, locks)."""
    config = circus.write_config(f"""
        [circus]
        pidfile = {circus.tmp}/circus.pid

        [watcher:files]
        cmd = {report_command(circus.tmp, "files")}
        numprocesses = 3
        stdout_stream.filename = {circus.tmp}/files.log

        [watcher:piped]
        cmd = {report_command(circus.tmp, "piped")}
        numprocesses = 3

        [watcher:ready]
        cmd = {CHILD_PYTHON} -S -E {CHILDREN / 'notifier.py'} 0 -1 5 {circus.tmp} ready
        notify = true
        numprocesses = 2
        """)
    arbiter = circus.start(config)
    for name, count in (("files", 3), ("piped", 3), ("ready", 2)):
        wait_count(arbiter, name, count)
    held = {os.readlink(f"/proc/{arbiter.pid}/fd/{fd}") for fd in _fds(arbiter.pid)}
    assert len(held) > 20, "the arbiter holds many fds"
    for name in ("files", "piped"):
        for pid in real_pids(arbiter, name):
            assert _fds(pid) == [0, 1, 2], f"{name} pid {pid}: {_fd_targets(pid)}"
    for pid in real_pids(arbiter, "ready"):
        # notifier.py has its own socket to send from: fine, if it is not one of the arbiter's.
        shared = [t for t in _fd_targets(pid)[3:] if t.partition(" -> ")[2] in held]
        assert shared == [], f"ready pid {pid} holds the arbiter's {shared}"
    _check_spawner(arbiter)


def _fds(pid: int) -> list[int]:
    return sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))


def _fd_targets(pid: int) -> list[str]:
    return [f"{fd} -> {os.readlink(f'/proc/{pid}/fd/{fd}')}" for fd in _fds(pid)]


def _check_spawner(arbiter: Arbiter) -> None:
    """The spawner (a fork of the arbiter) holds only its socket to the arbiter and /dev/null
    besides stdio: no copy of the arbiter's later descriptors."""
    own = arbiter.process.cmdline()
    spawner = next(p for p in arbiter.process.children() if p.cmdline() == own)
    extra = [t for t in _fd_targets(spawner.pid) if int(t.split()[0]) > 2]
    assert len(extra) <= 2, extra
