"""A hostile local user against the files the arbiter (root) writes, and against a non-root
arbiter's runtime directory: links planted in place of a log file, a rotated file, a pidfile or
a lock file, a directory swapped for a link, a squatted /tmp/circus-sd-UID.

The attacker is a real throwaway user (useradd, removed after the test), acting with setpriv and
ordinary commands (ln, mv, mkdir). The victim is a root-owned file or directory the attacker
cannot even read: after the attack it must be exactly as before, and the arbiter must say what
it refused and why. A non-root arbiter runs as another throwaway user, under the system python3
(the venv's interpreter lives under /root), without XDG_RUNTIME_DIR.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import subprocess
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from arbiter_harness import (
    CHILD_PYTHON,
    CHILDREN,
    ROOT,
    Arbiter,
    Circus,
    child_command,
    read_lines,
    stays_equal,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

SYSTEM_PYTHON = "/usr/bin/python3"
EX_CONFIG = 78
# Longer than the 1 s after which a FileStream notices its file moved, and than the 2 s between
# retries of a failing stream: had the arbiter followed a link, it would have written by then.
OBSERVE = 3.5
SECRET = "root's own content\n"


def _system_python_runs_circus_sd() -> bool:
    if os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists(SYSTEM_PYTHON):
        return False
    check = [SYSTEM_PYTHON, "-I", "-c", "import zmq, psutil"]
    return subprocess.run(check, capture_output=True, check=False).returncode == 0


needs_users = pytest.mark.skipif(
    not _system_python_runs_circus_sd(),
    reason="needs root, setpriv, and python3-zmq and python3-psutil for the system python3",
)


@dataclasses.dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int

    def run(self, *argv: str, env: dict[str, str] | None = None,
            cwd: Path | str = "/") -> subprocess.CompletedProcess[str]:
        """Run `argv` as this user (and their group only), to completion."""
        return subprocess.run(
            [*self.setpriv(), *argv], capture_output=True, text=True, timeout=30, cwd=cwd,
            env=env, check=False,
        )

    def do(self, *argv: str) -> None:
        result = self.run(*argv)
        assert result.returncode == 0, f"{self.name}: {argv}: {result.stderr}"

    def setpriv(self) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]


def runtime_dir(user: Account) -> Path:
    """A non-root arbiter's runtime directory without XDG_RUNTIME_DIR."""
    return Path(f"/tmp/circus-sd-{user.uid}")


@pytest.fixture
def new_user(circus: Circus) -> Iterator[Callable[[], Account]]:
    """Makes throwaway users, each with a group of its own. After the test: stops what runs
    (as the `circus` fixture does, which would come too late: a user who still runs a process
    cannot be removed), then removes their runtime directories, the users and the groups."""
    made: list[tuple[str, str]] = []
    accounts: list[Account] = []

    def make() -> Account:
        tag = uuid.uuid4().hex[:8]
        user, group = f"csdhp-u{tag}", f"csdhp-g{tag}"
        subprocess.run(["groupadd", group], check=True)
        made.append((user, group))
        subprocess.run(
            ["useradd", "-M", "-N", "-g", group, "-d", "/nonexistent", "-s", "/usr/sbin/nologin",
             user],
            check=True,
        )
        ids = subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True)
        gids = subprocess.run(["id", "-g", user], capture_output=True, text=True, check=True)
        account = Account(user, int(ids.stdout), int(gids.stdout))
        shutil.rmtree(runtime_dir(account), ignore_errors=True)  # left by someone before
        accounts.append(account)
        return account

    yield make
    problems = circus.cleanup()
    for account in accounts:
        shutil.rmtree(runtime_dir(account), ignore_errors=True)
    for user, group in made:
        subprocess.run(["userdel", user], capture_output=True, check=False)
        subprocess.run(["groupdel", group], capture_output=True, check=False)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def _victim(circus: Circus) -> Path:
    """A root-owned file in a directory only root may enter."""
    directory = circus.tmp / "victim"
    directory.mkdir(mode=0o700)
    target = directory / "authorized_keys"
    target.write_text(SECRET)
    return target


def _snapshot(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.iterdir())}


def _root_dir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir()
    path.chmod(mode)
    return path


def _attackers_dir(path: Path, attacker: Account) -> Path:
    path.mkdir()
    os.chown(path, attacker.uid, attacker.gid)
    return path


def _writer(outdir: Path, name: str) -> str:
    """A watcher's cmd writing 20 lines a second for minutes."""
    return child_command("writer.py", outdir, name, "--lines", "100000", "--rate", "20")


# -- log files -----------------------------------------------------------------------------------


@needs_users
def test_a_log_directory_its_user_owns_is_refused_and_a_planted_link_writes_nothing(
    circus: Circus, new_user: Callable[[], Account]
) -> None:
    """/var/log/myapp owned by myapp, the watcher's user: myapp swaps the log file (and its
    rotated names) for links to root's files. Nothing is ever written through them: the stream
    refuses the directory, saying which and what to do; once root owns the directory (and the
    link is gone), the stream writes by itself."""
    attacker = new_user()
    world = circus.world_dir()
    target = _victim(circus)
    logs = _attackers_dir(_root_dir(world / "var-log") / "myapp", attacker)
    log = logs / "app.log"
    config = circus.write_config(f"""
        [watcher:app]
        cmd = {_writer(world, "app")}
        uid = {attacker.name}
        gid = {attacker.gid}
        backpressure_timeout = 0.2
        stdout_stream.class = FileStream
        stdout_stream.filename = {log}
        stdout_stream.max_bytes = 2000
        stdout_stream.backup_count = 2

        [watcher:safe]
        cmd = {_writer(world, "safe")}
        uid = {attacker.name}
        stdout_stream.filename = {world}/var-log/safe.log
        """)
    arbiter = circus.start(config)
    wait_until(lambda: len(read_lines(world / "var-log" / "safe.log")) >= 5, 5,
               "lines in a log whose directory only root may change", circus.log_tails)

    # The attack, as myapp: whatever is at the log's names becomes a link to root's file.
    if log.exists():
        attacker.do("mv", str(log), f"{log}.old")
    for name in ("app.log", "app.log.1", "app.log.2"):
        attacker.do("ln", "-sfn", str(target), str(logs / name))

    stays_equal(target.read_text, OBSERVE, "root's file behind the planted links")
    assert target.read_text() == SECRET
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 and target.stat().st_uid == 0
    message = arbiter.wait_log(r"refusing to write [^\n]*app\.log: [^\n]*")
    assert f"{logs} belongs to user {attacker.name} (uid {attacker.uid}), not to root" in message
    assert f"chown root {logs}; chmod go-w {logs}" in message
    assert "the program needs no access to it" in message

    # The documented fix: the directory becomes root's (and the planted link goes).
    for name in ("app.log", "app.log.1", "app.log.2"):
        (logs / name).unlink()
    os.chown(logs, 0, 0)
    arbiter.wait_log(r"file [^\n]*app\.log works again", timeout=10)
    wait_until(lambda: len(read_lines(log)) >= 3, 5, "lines in the fixed log", circus.log_tails)
    assert not log.is_symlink() and log.stat().st_uid == 0
    assert target.read_text() == SECRET


@needs_users
def test_in_a_sticky_directory_anyone_writes_to_only_the_arbiters_own_files_are_used(
    circus: Circus, new_user: Callable[[], Account]
) -> None:
    """/tmp-like (root's, mode 1777): anyone may add a name, nobody may replace another's. A
    link planted before the arbiter starts is not followed, a file another user made is not
    appended to (they would read the output); a new file is the arbiter's and is written."""
    attacker = new_user()
    world = circus.world_dir()  # root's, 1777
    target = _victim(circus)
    attacker.do("ln", "-s", str(target), str(world / "linked.log"))
    attacker.do("touch", str(world / "theirs.log"))
    config = circus.write_config(f"""
        [watcher:linked]
        cmd = {_writer(world, "linked")}
        backpressure_timeout = 0.2
        stdout_stream.filename = {world}/linked.log

        [watcher:theirs]
        cmd = {_writer(world, "theirs")}
        backpressure_timeout = 0.2
        stdout_stream.filename = {world}/theirs.log

        [watcher:fresh]
        cmd = {_writer(world, "fresh")}
        stdout_stream.filename = {world}/fresh.log
        """)
    arbiter = circus.start(config)

    wait_until(lambda: len(read_lines(world / "fresh.log")) >= 5, 5, "lines in fresh.log",
               circus.log_tails)
    assert (world / "fresh.log").stat().st_uid == 0
    stays_equal(lambda: (target.read_text(), (world / "theirs.log").read_text()), OBSERVE,
                "root's file behind the link, and the other user's file")
    assert (target.read_text(), (world / "theirs.log").read_text()) == (SECRET, "")
    linked = arbiter.wait_log(r"refusing to write [^\n]*linked\.log: [^\n]*")
    assert f"{world}/linked.log is a symbolic link, which circus-sd does not follow" in linked
    theirs = arbiter.wait_log(r"refusing to write [^\n]*theirs\.log: [^\n]*")
    assert f"{world}/theirs.log belongs to user {attacker.name}" in theirs


@needs_users
def test_rotation_and_reopening_never_follow_a_swapped_directory(
    circus: Circus, new_user: Callable[[], Account]
) -> None:
    """The log directory is root's, but it lies in the user's home: the user may swap it for a
    link to any directory, where a reopen would create files and a rotation would rename and
    delete root's. Refused up front, naming the home, and no file there is touched."""
    attacker = new_user()
    world = circus.world_dir()
    victim = circus.tmp / "victim"
    victim.mkdir(mode=0o700)
    for name in ("app.log", "app.log.20000101000000", "app.log.20000101000001", "keep"):
        (victim / name).write_text(f"{name}: {SECRET}")
    before = _snapshot(victim)
    home = _attackers_dir(world / "home", attacker)
    logs = _root_dir(home / "logs")
    config = circus.write_config(f"""
        [watcher:app]
        cmd = {_writer(world, "app")}
        backpressure_timeout = 0.2
        stdout_stream.class = TimedRotatingFileStream
        stdout_stream.filename = {logs}/app.log
        stdout_stream.rotate_when = S
        stdout_stream.backup_count = 1
        """)
    arbiter = circus.start(config)
    attacker.do("mv", str(logs), str(home / "logs.old"))
    attacker.do("ln", "-s", str(victim), str(logs))

    stays_equal(lambda: _snapshot(victim), OBSERVE, "the directory the link leads to")
    assert _snapshot(victim) == before
    message = arbiter.wait_log(r"refusing to write [^\n]*app\.log: [^\n]*")
    assert f"{home} belongs to user {attacker.name}" in message


# -- pidfile and lock files ----------------------------------------------------------------------


def _start_up(circus: Circus, config: Path) -> subprocess.CompletedProcess[str] | None:
    """A start-up expected to be refused; None if the arbiter ran instead (killed after 10 s:
    what it did meanwhile is for the test to check)."""
    try:
        return circus.run(str(config))
    except subprocess.TimeoutExpired:
        return None


@needs_users
@pytest.mark.parametrize("where", ["users-directory", "sticky-directory"])
def test_a_pidfile_planted_as_a_link_is_neither_truncated_nor_written(
    circus: Circus, new_user: Callable[[], Account], where: str
) -> None:
    attacker = new_user()
    world = circus.world_dir()
    target = _victim(circus)
    directory = _attackers_dir(world / "run", attacker) if where == "users-directory" else world
    pidfile = directory / "circus.pid"
    attacker.do("ln", "-s", str(target), str(pidfile))
    config = circus.write_config(f"""
        [circus]
        pidfile = {pidfile}

        [watcher:app]
        cmd = {_writer(world, "app")}
        """)

    result = _start_up(circus, config)

    assert target.read_text() == SECRET
    assert result is not None and result.returncode == EX_CONFIG, result
    assert f"pidfile: refusing {pidfile}: " in result.stderr
    if where == "users-directory":
        assert f"{directory} belongs to user {attacker.name}" in result.stderr
    else:
        assert f"{pidfile} is a symbolic link" in result.stderr
    assert pidfile.is_symlink(), "the planted link is left alone"


@needs_users
@pytest.mark.parametrize("where", ["users-directory", "sticky-directory"])
def test_a_control_socket_lock_planted_as_a_link_creates_nothing(
    circus: Circus, new_user: Callable[[], Account], where: str
) -> None:
    """The directory of the ipc sockets and their .lock files must be the arbiter's alone: one
    another user owns or may write to (even sticky) is refused before anything is created."""
    attacker = new_user()
    world = circus.world_dir()
    victim = circus.tmp / "victim"
    victim.mkdir(mode=0o700)
    directory = _attackers_dir(world / "run", attacker) if where == "users-directory" else world
    attacker.do("ln", "-s", str(victim / "created-by-root"), str(directory / "control.sock.lock"))
    config = circus.tmp / "circus.ini"
    config.write_text(textwrap.dedent(f"""
        [circus]
        endpoint = ipc://{directory}/control.sock
        pubsub_endpoint = ipc://{circus.tmp}/events.sock

        [watcher:app]
        cmd = {_writer(world, "app")}
        """))

    result = _start_up(circus, config)

    assert list(victim.iterdir()) == []
    assert result is not None and result.returncode == EX_CONFIG, result
    if where == "users-directory":
        assert f"socket directory: {directory} belongs to user {attacker.name}" in result.stderr
    else:  # a sticky directory is accepted, but only with a .lock of our own, never a link
        assert f"lock {directory}/control.sock.lock: {directory}/control.sock.lock is a " \
            "symbolic link" in result.stderr
    assert not (directory / "control.sock").exists()


@needs_users
def test_a_control_socket_directly_in_a_sticky_directory_is_ours_alone(
    circus: Circus, new_user: Callable[[], Account]
) -> None:
    """`endpoint = ipc:///tmp/circus.sock`, as Circus users wrote: accepted, the socket and its
    .lock made and owned by the arbiter, 0600; the directory left as it is. A .lock another user
    made there first is refused (see above for a planted link)."""
    attacker = new_user()
    world = circus.world_dir()  # root's, 1777, as /tmp
    config = circus.tmp / "circus.ini"
    config.write_text(textwrap.dedent(f"""
        [circus]
        endpoint = ipc://{world}/circus.sock
        pubsub_endpoint = ipc://{world}/circus-events.sock

        [watcher:app]
        cmd = {_writer(world, "app")}
        """))
    arbiter = circus.start(config)
    for name in ("circus.sock", "circus-events.sock"):
        info = (world / name).lstat()
        assert stat.S_ISSOCK(info.st_mode) and info.st_uid == 0
        assert stat.S_IMODE(info.st_mode) == 0o600
        lock = (world / f"{name}.lock").lstat()
        assert stat.S_ISREG(lock.st_mode) and lock.st_uid == 0
    assert stat.S_IMODE(world.stat().st_mode) == 0o1777
    assert arbiter.stop() == 0

    squatted = circus.world_dir()
    attacker.do("touch", str(squatted / "circus.sock.lock"))
    config.write_text(textwrap.dedent(f"""
        [circus]
        endpoint = ipc://{squatted}/circus.sock
        pubsub_endpoint = ipc://{circus.tmp}/events.sock

        [watcher:app]
        cmd = {_writer(world, "app")}
        """))
    result = _start_up(circus, config)
    assert result is not None and result.returncode == EX_CONFIG, result
    assert f"{squatted}/circus.sock.lock belongs to user {attacker.name}" in result.stderr
    assert not (squatted / "circus.sock").exists()


# -- common root setups --------------------------------------------------------------------------


@needs_users
def test_logs_under_a_group_writable_var_log_are_written(
    circus: Circus, new_user: Callable[[], Account]
) -> None:
    """Ubuntu's /var/log is root:syslog 0775: a log in root's /var/log/myapp is written (only
    the directory holding the file must be root's alone); one directly in the group's
    directory is refused, naming it."""
    member = new_user()
    world = circus.world_dir()
    var_log = _root_dir(world / "var-log", 0o775)
    os.chown(var_log, 0, member.gid)
    myapp = _root_dir(var_log / "myapp")
    config = circus.write_config(f"""
        [watcher:app]
        cmd = {_writer(world, "app")}
        stdout_stream.filename = {myapp}/app.log

        [watcher:direct]
        cmd = {_writer(world, "direct")}
        backpressure_timeout = 0.2
        stdout_stream.filename = {var_log}/direct.log
        """)
    arbiter = circus.start(config)
    wait_until(lambda: len(read_lines(myapp / "app.log")) >= 3, 5, "lines under var-log/myapp",
               circus.log_tails)
    message = arbiter.wait_log(r"refusing to write [^\n]*direct\.log: [^\n]*")
    assert f"{var_log} is writable by group {member.name.replace('-u', '-g')}" in message
    assert not (var_log / "direct.log").exists()


@needs_users
def test_a_log_files_link_made_by_root_is_followed_and_one_in_the_users_directory_is_not(
    circus: Circus, new_user: Callable[[], Account]
) -> None:
    """`stdout_stream.filename = /dev/stdout` in a container: a link in root's directory to a
    FIFO (read here) gets the lines, never rotated (said once); the same link in the watcher
    user's directory is refused."""
    attacker = new_user()
    world = circus.world_dir()
    dev = _root_dir(circus.tmp / "dev")
    fifo = dev / "pipe"
    os.mkfifo(fifo)
    (dev / "stdout").symlink_to(fifo)
    theirs = _attackers_dir(world / "theirs", attacker)
    target = _victim(circus)
    attacker.do("ln", "-s", str(target), str(theirs / "stdout"))
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        config = circus.write_config(f"""
            [watcher:app]
            cmd = {_writer(world, "app")}
            stdout_stream.filename = {dev}/stdout
            stdout_stream.max_bytes = 100
            stdout_stream.backup_count = 2

            [watcher:theirs]
            cmd = {_writer(world, "theirs")}
            backpressure_timeout = 0.2
            stdout_stream.filename = {theirs}/stdout
            """)
        arbiter = circus.start(config)
        received = bytearray()

        def lines() -> int:
            with contextlib.suppress(BlockingIOError):
                received.extend(os.read(reader, 65536))
            return received.count(b"\n")

        wait_until(lambda: lines() >= 5, 5, "lines through the link to the FIFO", circus.log_tails)
        assert sorted(p.name for p in dev.iterdir()) == ["pipe", "stdout"]  # nothing rotated
        arbiter.wait_log(r"stdout leads to [^\n]*pipe \(a device or a pipe\): appended to, "
                         r"never rotated")
        message = arbiter.wait_log(r"refusing to write [^\n]*theirs/stdout: [^\n]*")
        assert f"{theirs} belongs to user {attacker.name}" in message
        assert target.read_text() == SECRET
        assert arbiter.stop() == 0
        assert arbiter.count("never rotated") == 1
    finally:
        os.close(reader)


@needs_users
def test_the_arbiters_own_log_in_a_directory_another_user_may_change_stops_start_up(
    circus: Circus, new_user: Callable[[], Account]
) -> None:
    """[circus] logoutput is opened and reopened by path, following links, as root: a directory
    another user owns is refused at start (exit 78, naming it); nothing is written there."""
    attacker = new_user()
    world = circus.world_dir()
    target = _victim(circus)
    logs = _attackers_dir(world / "logs", attacker)
    attacker.do("ln", "-s", str(target), str(logs / "circus.log"))
    config = circus.write_config(f"""
        [circus]
        logoutput = {logs}/circus.log

        [watcher:app]
        cmd = {_writer(world, "app")}
        """)
    result = _start_up(circus, config)
    assert target.read_text() == SECRET
    assert result is not None and result.returncode == EX_CONFIG, result
    assert f"refusing logoutput {logs}/circus.log: {logs} belongs to user {attacker.name}" \
        in result.stderr


# -- a non-root arbiter's runtime directory ------------------------------------------------------

# What a squatter serves on the socket they planted: records each request, answers "ok".
SQUATTER = textwrap.dedent("""
    import json, sys
    import zmq
    endpoint, record = sys.argv[1], sys.argv[2]
    socket = zmq.Context().socket(zmq.ROUTER)
    socket.bind(endpoint)
    open(record + ".ready", "w").close()
    while True:
        frames = socket.recv_multipart()
        with open(record, "ab") as out:
            out.write(frames[-1] + b"\\n")
        request = json.loads(frames[-1])
        reply = {"status": "ok", "id": request["id"], "time": 0.0, "statuses": {}}
        socket.send_multipart([frames[0], json.dumps(reply).encode()])
""")


def _user_env() -> dict[str, str]:
    """What a user's shell might have, without XDG_RUNTIME_DIR (a cron job, su, a container)."""
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": "/nonexistent", "LANG": "C.UTF-8"}


def _program(module: str, *args: str) -> list[str]:
    return [SYSTEM_PYTHON, "-c", f"import sys; from {module} import main; sys.exit(main())",
            *args]


def _start_as(circus: Circus, user: Account, config: Path, log_path: Path) -> Arbiter:
    with open(log_path, "wb") as log, open(os.devnull, "rb") as stdin:
        popen = subprocess.Popen(
            [*user.setpriv(), *_program("circus_sd.cli", str(config))],
            stdin=stdin, stdout=log, stderr=log, cwd=config.parent, env=_user_env(),
        )
    arbiter = Arbiter(popen, log_path)
    circus.arbiters.append(arbiter)
    wait_until(lambda: "circus-sd running" in arbiter.log() or not arbiter.running(), 20,
               "the user's circus-sd to run", arbiter.log_tail)
    assert arbiter.running(), arbiter.log_tail()
    return arbiter


@needs_users
def test_a_squatted_runtime_directory_is_refused_by_the_arbiter_and_by_circusctl(
    circus: Circus, new_user: Callable[[], Account]
) -> None:
    """Another user made /tmp/circus-sd-UID first (mode 0777) and listens on control.sock in
    it. The user's circusctl does not send them a thing, the user's arbiter does not start,
    both saying whose the directory is; once it is gone, the arbiter makes its own (0700)."""
    victim, squatter = new_user(), new_user()
    world = circus.world_dir()
    runtime = runtime_dir(victim)
    squatter.do("mkdir", "-m", "0777", str(runtime))
    script = world / "squatter.py"
    script.write_text(SQUATTER)
    record = world / "heard"
    server = subprocess.Popen(
        [*squatter.setpriv(), SYSTEM_PYTHON, "-I", str(script), f"ipc://{runtime}/control.sock",
         str(record)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
    )
    try:
        wait_until(Path(f"{record}.ready").exists, 10, "the squatter's socket")
        config = world / "circus.ini"
        config.write_text("[circus]\ncgroup = off\n\n[watcher:app]\ncmd = /bin/sleep 3600\n")

        ctl = victim.run(*_program("circus_sd.ctl", "add", "db", "db-admin --password=hunter2"),
                         env=_user_env())
        refused = victim.run(*_program("circus_sd.cli", str(config)), env=_user_env(),
                             cwd=world)
    finally:
        server.kill()
        server.wait(5)

    assert ctl.returncode == 1, ctl.stderr
    assert f"not using {runtime}/control.sock: {runtime} belongs to user {squatter.name}" in (
        ctl.stderr)
    assert "XDG_RUNTIME_DIR" in ctl.stderr
    assert not record.exists(), f"the squatter heard: {record.read_text()}"
    assert refused.returncode == EX_CONFIG, refused.stderr
    assert f"socket directory: {runtime} belongs to user {squatter.name}" in refused.stderr

    shutil.rmtree(runtime)
    arbiter = _start_as(circus, victim, config, world / "arbiter.log")
    info = runtime.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, victim.uid)
    status = victim.run(*_program("circus_sd.ctl", "status"), env=_user_env())
    assert (status.returncode, status.stdout) == (0, "app: active\n"), status.stderr
    assert arbiter.stop() == 0


def _start_notify_watcher(circus: Circus, user: Account) -> Arbiter:
    """`user`'s arbiter with one `notify` watcher, its control sockets in a directory of the
    user's own: the notify sockets are what makes the runtime directory."""
    world = circus.world_dir()
    sockets = _attackers_dir(world / "sockets", user)  # the user's own
    config = world / "circus.ini"
    config.write_text(textwrap.dedent(f"""
        [circus]
        cgroup = off
        endpoint = ipc://{sockets}/control.sock
        pubsub_endpoint = ipc://{sockets}/events.sock

        [watcher:ready]
        cmd = {CHILD_PYTHON} -S -E {CHILDREN / "notifier.py"} 0 -1 5
        notify = true
        """))
    return _start_as(circus, user, config, world / "arbiter.log")


@needs_users
def test_the_runtime_directory_is_private_whichever_part_makes_it(
    circus: Circus, new_user: Callable[[], Account]
) -> None:
    """With the control sockets elsewhere, the notify sockets make the runtime directory: 0700
    as well (it was 0755), and it is checked the same way."""
    user = new_user()
    runtime = runtime_dir(user)
    arbiter = _start_notify_watcher(circus, user)
    wait_until(lambda: runtime.exists() and any(runtime.glob("notify-*/ready-1-*.sock")), 10,
               "the notify socket, in the runtime directory", arbiter.log_tail)
    info = runtime.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, user.uid)
    assert arbiter.stop() == 0


@needs_users
def test_a_runtime_directory_squatted_for_the_notify_sockets_fails_the_spawn_with_the_reason(
    circus: Circus, new_user: Callable[[], Account]
) -> None:
    user, squatter = new_user(), new_user()
    runtime = runtime_dir(user)
    squatter.do("mkdir", "-m", "0777", str(runtime))
    arbiter = _start_notify_watcher(circus, user)
    arbiter.wait_log(rf"{runtime} belongs to user {squatter.name}", timeout=10)
    assert list(runtime.iterdir()) == [], "nothing made in the squatted directory"
    assert arbiter.stop() == 0
