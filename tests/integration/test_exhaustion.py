"""A hostile member of endpoint_group against the arbiter's descriptors and memory.

The attacker is a real unprivileged user, member of a throwaway group that is the arbiter's
endpoint_group, running small scripts with `setpriv` under the system python3 (raw AF_UNIX
sockets, or Debian's python3-zmq): the project venv lives under /root. Each script prints one
JSON line when done, then holds what it opened until its stdin is closed. Before these bounds,
connecting a thousand times made libzmq abort the arbiter (orphaning every child), and unread
replies, large requests, subscriptions and stuck output followers grew it by hundreds of MB.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import queue
import signal
import socket
import subprocess
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from arbiter_harness import (
    CHILD_PYTHON,
    CIRCUS_SD,
    Arbiter,
    Circus,
    WaitTimeout,
    report_command,
    wait_until,
)
from control_helpers import Clients, clients, watcher_sections
from test_control_access import SYSTEM_PYTHON, needs_system_zmq, operators  # noqa: F401

pytestmark = [pytest.mark.timeout(120), needs_system_zmq]

MB = 1 << 20

# Opens COUNT raw connections to PATH; reports how many connected (and why the others did
# not), then which of them the arbiter closed (EOF), once none closed for SETTLE seconds.
CONNECT = """
import json, resource, selectors, socket, sys, time
path, count, settle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held, failed = [], {}
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as exc:
        failed[exc.errno] = failed.get(exc.errno, 0) + 1
        s.close()
        continue
    s.setblocking(False)
    held.append(s)
watching = selectors.DefaultSelector()
for s in held:
    watching.register(s, selectors.EVENT_READ)
closed, quiet_since, deadline = 0, time.monotonic(), time.monotonic() + 30
while watching.get_map() and time.monotonic() - quiet_since < settle < deadline - time.monotonic():
    for key, _ in watching.select(0.05):
        try:
            data = key.fileobj.recv(4096)  # libzmq's greeting, then EOF if closed
        except OSError:
            data = b""
        if not data:
            watching.unregister(key.fileobj)
            closed += 1
            quiet_since = time.monotonic()
print(json.dumps({"connected": len(held), "failed": failed, "closed": closed,
                  "open": len(held) - closed}), flush=True)
sys.stdin.read()
"""

# Sends each JSON request given as an argument on its own connection; the replies (None when
# none came within TIMEOUT seconds).
REQUEST = """
import json, sys, uuid
import zmq
endpoint, timeout = sys.argv[1], float(sys.argv[2])
context = zmq.Context()
replies = []
for text in sys.argv[3:]:
    socket = context.socket(zmq.DEALER)
    socket.linger = 0
    socket.connect(endpoint)
    socket.send(json.dumps(dict(json.loads(text), id=uuid.uuid4().hex)).encode())
    replies.append(json.loads(socket.recv()) if socket.poll(timeout * 1000) else None)
    socket.close()
print(json.dumps(replies), flush=True)
context.term()
"""

# Sends COUNT messages of SIZE bytes on a DEALER; reports how many times the arbiter dropped the
# connection (waiting for one per message, at most 20 s).
LARGE = """
import json, sys, time
import zmq
from zmq.utils.monitor import recv_monitor_message
endpoint, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
context = zmq.Context()
socket = context.socket(zmq.DEALER)
socket.linger = 0
socket.sndhwm = 0
monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
socket.connect(endpoint)
for _ in range(count):
    socket.send(b"x" * size)
dropped, deadline = 0, time.monotonic() + 20
while dropped < count and monitor.poll(max(0, deadline - time.monotonic()) * 1000):
    recv_monitor_message(monitor)
    dropped += 1
print(json.dumps({"dropped": dropped}), flush=True)
sys.stdin.read()
"""

# Sends COUNT copies of the JSON request REQUEST on one DEALER that never reads a reply.
UNREAD = """
import json, sys, uuid
import zmq
endpoint, count, request = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
context = zmq.Context()
socket = context.socket(zmq.DEALER)
socket.linger = 0
socket.sndhwm = 0
socket.rcvhwm = 1
socket.connect(endpoint)
for _ in range(count):
    socket.send(json.dumps(dict(request, id=uuid.uuid4().hex)).encode())
print(json.dumps({"sent": count}), flush=True)
sys.stdin.read()
"""

# COUNT SUB sockets on ENDPOINT, each subscribed to the topics given, none ever reading;
# reports how many of their connections the arbiter dropped within SETTLE seconds.
SUBSCRIBE = """
import json, sys, time
import zmq
from zmq.utils.monitor import recv_monitor_message
endpoint, count, settle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
topics = [t.encode() for t in sys.argv[4:]]
if len(topics) == 1 and topics[0].startswith(b"gen:"):
    _, number, length = topics[0].split(b":")
    topics = [b"watcher.%0*d" % (int(length) - 8, i) for i in range(int(number))]
context = zmq.Context()
sockets, monitors = [], []
for _ in range(count):
    socket = context.socket(zmq.SUB)
    socket.linger = 0
    socket.rcvhwm = 1
    socket.rcvbuf = 4096
    socket.sndhwm = 0  # every subscription goes out, however many
    monitors.append(socket.get_monitor_socket(zmq.EVENT_DISCONNECTED))
    socket.connect(endpoint)
    for topic in topics:
        socket.setsockopt(zmq.SUBSCRIBE, topic)
    sockets.append(socket)
poller = zmq.Poller()
for monitor in monitors:
    poller.register(monitor, zmq.POLLIN)
dropped, deadline = 0, time.monotonic() + settle
while time.monotonic() < deadline:
    for monitor, _ in poller.poll(max(0, deadline - time.monotonic()) * 1000):
        recv_monitor_message(monitor)
        dropped += 1
print(json.dumps({"dropped": dropped}), flush=True)
sys.stdin.read()
"""


class Member:
    """A throwaway user, member of a throwaway group (not as its primary group)."""

    def __init__(self, user: str, group: str) -> None:
        self.user, self.group = user, group
        self.uid = pwd.getpwnam(user).pw_uid

    @property
    def setpriv(self) -> list[str]:
        return ["setpriv", f"--reuid={self.user}", "--regid=nogroup", "--init-groups"]


@pytest.fixture
def member(operators: tuple[str, str]) -> Member:  # noqa: F811
    return Member(*operators)


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


class Attack:
    """One script run as the member; its JSON report; holds what it opened until `end`."""

    def __init__(self, world: Path, member: Member, script: str, *args: object) -> None:
        path = world / f"attack-{uuid.uuid4().hex[:8]}.py"
        path.write_text(textwrap.dedent(script))
        path.chmod(0o644)
        self.popen = subprocess.Popen(
            [*member.setpriv, SYSTEM_PYTHON, "-I", str(path), *(str(a) for a in args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._lines.put(line)

    def report(self, timeout: float = 60.0) -> Any:
        try:
            return json.loads(self._lines.get(timeout=timeout))
        except queue.Empty:
            self.popen.kill()
            self.popen.wait(5)
            stderr = self.popen.stderr.read() if self.popen.stderr is not None else b""
            self.end()
            raise WaitTimeout(
                f"no report from the attack within {timeout:g} s: {stderr!r}"
            ) from None

    def end(self) -> None:
        """Let the attacker go (it exits when its stdin closes); idempotent."""
        if self.popen.stdin is not None and not self.popen.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.popen.stdin.close()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        self._reader.join(5)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None and not stream.closed:
                stream.close()


@pytest.fixture
def attacks() -> Iterator[list[Attack]]:
    started: list[Attack] = []
    yield started
    for attack in started:
        attack.end()


def _start(
    circus: Circus, member: Member, options: str = "", watchers: str = "",
    nofile: tuple[int, int] | None = None,
) -> tuple[Arbiter, Path]:
    """An arbiter whose sockets are in a directory the member may reach; (it, that directory)."""
    world = circus.world_dir()
    run = world / "run"
    config = circus.tmp / "circus.ini"
    config.write_text(
        f"[circus]\nendpoint = ipc://{run}/control.sock\npubsub_endpoint = ipc://{run}/events.sock\n"
        f"endpoint_group = {member.group}\n{textwrap.dedent(options)}\n\n"
        + (watchers or watcher_sections(circus, {"web": {"numprocesses": 2}}))
    )
    return circus.start(config, nofile=nofile), run


def _member_request(world: Path, member: Member, *requests: dict[str, Any]) -> list[Any]:
    attack = Attack(world, member, REQUEST, f"ipc://{world}/run/control.sock", 2.0,
                    *(json.dumps(r) for r in requests))
    try:
        return list(attack.report(30))
    finally:
        attack.end()


def _vm_hwm(pid: int) -> int:
    """Peak resident memory of `pid` so far, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _rss(arbiter: Arbiter) -> int:
    return int(psutil.Process(arbiter.pid).memory_info().rss)


# -- descriptors ---------------------------------------------------------------------------------


def test_a_member_past_its_bound_is_refused_and_root_still_served(
    circus: Circus, member: Member, attacks: list[Attack], zmq_clients: Clients
) -> None:
    arbiter, run = _start(circus, member, "max_connections_per_user = 8")
    children = arbiter.worker_pids()
    status = {"command": "status", "properties": {}}
    assert _member_request(run.parent, member, status)[0]["status"] == "ok"

    attacks.append(Attack(run.parent, member, CONNECT, run / "control.sock", 20, 1.0))
    held = attacks[-1].report()

    assert (held["connected"], held["closed"], held["open"]) == (20, 12, 8), held
    arbiter.wait_log(rf"refused \d+ connection\(s\) from uid {member.uid}: it holds "
                     r"max_connections_per_user = 8")
    # Over its bound, the member's own requests are refused too (its connection is closed).
    assert _member_request(run.parent, member, status) == [None]
    # Root is never counted.
    ctl = zmq_clients.control(f"ipc://{run}/control.sock")
    assert ctl.ok("status")["statuses"] == {"web": "active"}
    assert arbiter.worker_pids() == children and arbiter.running()

    # Once the member lets go, it is served again.
    attacks[-1].end()
    wait_until(
        lambda: _member_request(run.parent, member, status)[0] is not None, 15,
        "the member to be served again", arbiter.log_tail,
    )


def test_all_other_users_together_are_bounded_and_then_shut_out(
    circus: Circus, member: Member, attacks: list[Attack], zmq_clients: Clients
) -> None:
    arbiter, run = _start(circus, member, "max_connections = 5\nmax_connections_per_user = 8")

    attacks.append(Attack(run.parent, member, CONNECT, run / "control.sock", 8, 1.0))
    held = attacks[-1].report()
    assert (held["connected"], held["closed"], held["open"]) == (8, 3, 5), held
    arbiter.wait_log(r"max_connections = 5 reached")
    # With max_connections held, the socket file admits root and the arbiter's user only: the
    # kernel refuses the others, before libzmq takes a descriptor for them.
    more = Attack(run.parent, member, CONNECT, run / "events.sock", 3, 0.2)
    attacks.append(more)
    assert more.report()["failed"] == {str(errno.EACCES): 3}
    ctl = zmq_clients.control(f"ipc://{run}/control.sock")
    assert ctl.ok("status")["statuses"] == {"web": "active"}

    attacks[0].end()
    wait_until(
        lambda: (run / "control.sock").stat().st_mode & 0o070 == 0o060, 10,
        "the door to open again", arbiter.log_tail,
    )


@pytest.mark.parametrize("socket_name", ["control.sock", "events.sock", "control-output.sock"])
def test_connecting_until_no_descriptor_is_left_never_kills_the_arbiter(
    circus: Circus, member: Member, attacks: list[Attack], zmq_clients: Clients, socket_name: str
) -> None:
    # Bounds out of the way: only the door stands between a flood and the descriptor limit.
    arbiter, run = _start(
        circus, member, "max_connections = 100000\nmax_connections_per_user = 100000",
        nofile=(1024, 1024),
    )
    wait_until(lambda: len(arbiter.worker_pids()) == 2, 5, "two processes", arbiter.log_tail)
    children = arbiter.worker_pids()

    attacks.append(Attack(run.parent, member, CONNECT, run / socket_name, 3000, 0.5))
    held = attacks[-1].report()

    assert arbiter.running(), arbiter.log_tail()
    assert held["failed"].get(str(errno.EACCES), 0) > 0, held
    # Held up to the door (a quarter of the limit kept free), far past every bound but that one.
    assert 256 < held["open"] < 1024, held
    arbiter.wait_log(r"closed to all but root and the arbiter's user: \d+ of RLIMIT_NOFILE 1024")
    ctl = zmq_clients.control(f"ipc://{run}/control.sock")
    assert ctl.ok("status")["statuses"] == {"web": "active"}
    assert arbiter.worker_pids() == children
    # A process killed now is replaced (the spawn reserve is not what the flood took).
    os.kill(min(children), signal.SIGKILL)
    wait_until(
        lambda: len(arbiter.worker_pids() - children) == 1 and len(arbiter.worker_pids()) == 2,
        10, "the killed process to be replaced", arbiter.log_tail,
    )

    attacks[-1].end()
    status = {"command": "status", "properties": {}}
    wait_until(
        lambda: _member_request(run.parent, member, status)[0] is not None, 20,
        "the member to be served again", arbiter.log_tail,
    )
    assert arbiter.running()


# -- memory --------------------------------------------------------------------------------------


def test_an_oversized_request_ends_its_connection_unread(
    circus: Circus, member: Member, attacks: list[Attack]
) -> None:
    arbiter, run = _start(circus, member, "max_message_size = 64K")
    peak = _vm_hwm(arbiter.pid)

    attacks.append(Attack(run.parent, member, LARGE, f"ipc://{run}/control.sock", 5, 50 * MB))

    assert attacks[-1].report()["dropped"] == 5
    assert _vm_hwm(arbiter.pid) - peak < 20 * MB, "a large request was taken in"
    reply = _member_request(run.parent, member, {"command": "status", "properties": {}})[0]
    assert reply is not None and reply["status"] == "ok"


def test_replies_never_read_are_bounded(
    circus: Circus, member: Member, attacks: list[Attack], zmq_clients: Clients
) -> None:
    # 400 watchers: `status --details` replies of about 80 KB.
    watchers = "".join(
        f"[watcher:w{i:03d}-{'x' * 30}]\ncmd = /bin/true\nautostart = false\n\n" for i in range(400)
    )
    arbiter, run = _start(circus, member, "loglevel = debug", watchers)
    ctl = zmq_clients.control(f"ipc://{run}/control.sock")
    size = len(json.dumps(ctl.ok("status", details=True)))
    assert size > 60_000, size
    before = _rss(arbiter)

    request = {"command": "status", "properties": {"details": True}}
    attacks.append(Attack(run.parent, member, UNREAD, f"ipc://{run}/control.sock", 800,
                          json.dumps(request)))
    attacks[-1].report()
    # Every request is answered (in a debug line each), none of the answers read.
    arbiter.wait_log(r"command status \{\"details\": true\}", timeout=90, count=801)

    grown = _rss(arbiter) - before
    assert grown < 15 * MB, f"the arbiter grew by {grown / MB:.0f} MB"
    assert ctl.ok("status")["status"] == "ok"


def test_subscriptions_are_bounded_in_size_and_number(
    circus: Circus, member: Member, attacks: list[Attack]
) -> None:
    arbiter, run = _start(circus, member)
    peak = _vm_hwm(arbiter.pid)

    # A subscription larger than any topic ends its connection in libzmq.
    attacks.append(Attack(run.parent, member, SUBSCRIBE, f"ipc://{run}/events.sock", 1, 3.0,
                          "w" * 10_000))
    assert attacks[-1].report()["dropped"] >= 1
    # Thousands of distinct ones: past 1,024 topics the member who added them is refused.
    attacks.append(Attack(run.parent, member, SUBSCRIBE, f"ipc://{run}/events.sock", 1, 5.0,
                          "gen:5000:1000"))
    assert attacks[-1].report()["dropped"] >= 1
    arbiter.wait_log(rf"events: more than 1024 topics subscribed; refused uid {member.uid}")
    assert _vm_hwm(arbiter.pid) - peak < 40 * MB
    assert arbiter.running()


def test_stuck_output_followers_cost_a_bounded_buffer_each(
    circus: Circus, member: Member, attacks: list[Attack], zmq_clients: Clients
) -> None:
    # Output in blocks of 256 KiB, as fast as the arbiter takes it.
    blast = circus.tmp / "blast.py"
    blast.write_text("import os\nblock = (b'y' * 255 + b'\\n') * 1024\nwhile True:\n"
                     "    os.write(1, block)\n")
    watchers = (
        f"[watcher:blast]\ncmd = {CHILD_PYTHON} -S -E {blast}\n"
        "stdout_stream.class = FileStream\nstdout_stream.filename = /dev/null\n\n"
    )
    arbiter, run = _start(circus, member, watchers=watchers)
    endpoint = f"ipc://{run}/control-output.sock"
    clock = _follower(zmq_clients, endpoint, b"output.blast.")
    try:
        wait_until(lambda: _block(clock), 10, "a first block of output")
        before = _rss(arbiter)
        # Ten followers that never read, one every 50 blocks (the clock follower reads one
        # block at a time, missing the others): the blocks each holds are not the others' (a
        # block queued for several is held once).
        for _ in range(10):
            attacks.append(Attack(run.parent, member, SUBSCRIBE, endpoint, 1, 0.1,
                                  "output.blast."))
            attacks[-1].report()
            for _ in range(50):
                wait_until(lambda: _block(clock), 10, "a block")
        # Measured at each block the clock sees until 200 more were published (its numbers
        # say): far more than a stuck follower's queue (8) and socket buffers take, so these
        # are full, and stay so, while it is measured.
        start = seq = wait_until(lambda: _block(clock), 10, "a block")["seq"]
        grown = 0
        while seq < start + 200:
            grown = max(grown, _rss(arbiter) - before)
            seq = wait_until(lambda: _block(clock), 10, "a block")["seq"]
        grown = max(grown, _rss(arbiter) - before)
    finally:
        clock.close(linger=0)
    assert grown < 60 * MB, f"the arbiter grew by {grown / MB:.0f} MB"
    assert arbiter.running()


def test_an_abstract_endpoint_is_refused_by_check(circus: Circus) -> None:
    config = circus.tmp / "circus.ini"
    config.write_text(
        "[circus]\nendpoint = ipc://@circus-sd-test\n\n"
        f"[watcher:web]\ncmd = {report_command(circus.tmp, 'web')}\n"
    )
    for args in (("--check", str(config)), (str(config),)):
        result = circus.run(*args)
        assert result.returncode == 78, result
        assert "[circus] endpoint" in result.stderr and "abstract socket" in result.stderr, result
        assert "Traceback" not in result.stderr


def test_an_abstract_socket_from_systemd_is_refused_at_start(circus: Circus) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"\0circus-sd-test-{uuid.uuid4().hex}")
    listener.listen()
    config = circus.tmp / "circus.ini"
    config.write_text(
        f"[circus]\nendpoint = systemd:control\npubsub_endpoint = ipc://{circus.tmp}/e.sock\n\n"
        f"[watcher:web]\ncmd = {report_command(circus.tmp, 'web')}\n"
    )
    env = {**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "control"}
    with listener:
        # As systemd's socket activation does: the socket at fd 3, LISTEN_PID our pid.
        result = subprocess.run(
            ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', str(CIRCUS_SD), str(config)],
            capture_output=True, text=True, timeout=10, cwd=circus.tmp, env=env, check=False,
            preexec_fn=lambda: os.dup2(listener.fileno(), 3), pass_fds=(3,),
        )
    assert result.returncode == 78, result
    assert "an abstract unix socket has no file permissions" in result.stderr, result
    assert circus.reports.wids("web") == [], "nothing was started"


def test_output_blocks_are_numbered_so_a_follower_counts_what_it_lost(
    circus: Circus, zmq_clients: Clients
) -> None:
    watchers = (
        "[watcher:yes]\ncmd = /usr/bin/yes\n"
        "stdout_stream.class = FileStream\nstdout_stream.filename = /dev/null\n\n"
    )
    circus.start(circus.write_config(watchers))
    endpoint = f"ipc://{circus.tmp}/control-output.sock"
    stalled, reader = _follower(zmq_clients, endpoint), _follower(zmq_clients, endpoint)
    try:
        first = wait_until(lambda: _block(stalled), 10, "a first block of output")
        assert first["seq"] >= 1 and first["watcher"] == "yes"
        # While `stalled` reads nothing, `reader` sees 200 more blocks published.
        wait_until(
            lambda: (_block(reader) or {}).get("seq", 0) > first["seq"] + 200, 20,
            "200 more blocks",
        )
        seqs = [wait_until(lambda: _block(stalled), 10, "a block")["seq"] for _ in range(20)]
        assert seqs == sorted(seqs) and seqs[-1] - first["seq"] > 40, (first["seq"], seqs)
    finally:
        stalled.close(linger=0)
        reader.close(linger=0)


def _follower(zmq_clients: Clients, endpoint: str, topic: bytes = b"output.yes.") -> Any:
    import zmq

    follower = zmq_clients.context.socket(zmq.SUB)
    follower.linger = 0
    follower.rcvhwm = 1
    follower.subscribe(topic)
    follower.connect(endpoint)
    return follower


def _block(follower: Any) -> dict[str, Any] | None:
    """The header of the next block `follower` has, if any within 0.1 s."""
    if not follower.poll(100):
        return None
    return dict(json.loads(follower.recv_multipart()[1]))
