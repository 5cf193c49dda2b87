"""Child output through the real daemon: files (shared, rotated, moved), the default stream,
a user's class, faults (deleted directory, full filesystem) and journald's direct mode.

Children write numbered lines whose content says where they belong (writer.py), so every check
is by content: each line whole, each process's lines complete and in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from arbiter_harness import Circus, child_command, report_command, wait_until
from control_helpers import Clients, EventStream, clients, control_endpoint, events_endpoint

from circus_sd.output.lines import SPLIT_MARKER
from circus_sd.spawn_protocol import JournalStreamSetup, SpawnRequest
from circus_sd.spawner import Spawner, fork_spawner

pytestmark = pytest.mark.timeout(60)

_LINE = re.compile(rb"(\S+) (\d+) (out|err) (\d{8}) (p*)")

Key = tuple[str, int, str]  # (watcher, wid, stream)


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


def writer_command(circus: Circus, name: str, *options: str) -> str:
    return child_command("writer.py", circus.tmp, name, *options)


def parse_lines(data: bytes, what: str = "") -> dict[Key, list[int]]:
    """Sequence numbers per (watcher, wid, stream); fails on any line that is not whole."""
    found: dict[Key, list[int]] = collections.defaultdict(list)
    assert not data or data.endswith(b"\n"), f"{what}: ends in the middle of a line"
    for raw in data.split(b"\n")[:-1]:
        match = _LINE.fullmatch(raw)
        assert match, f"{what}: torn or merged line {raw[:200]!r}"
        seq = int(match[4])
        assert len(match[5]) == seq * 7 % 91, f"{what}: damaged line {raw[:200]!r}"
        found[(match[1].decode(), int(match[2]), match[3].decode())].append(seq)
    return found


def read_files(paths: Iterable[Path]) -> bytes:
    return b"".join(path.read_bytes() for path in paths)


def line_count(paths: Iterable[Path]) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            total += path.read_bytes().count(b"\n")
    return total


def assert_complete(found: dict[Key, list[int]], keys: Iterable[Key], lines: int) -> None:
    for key in keys:
        assert found.get(key) == list(range(lines)), (
            f"{key}: {len(found.get(key, []))} lines, not all of 0..{lines - 1} in order"
        )


def assert_in_order(found: dict[Key, list[int]]) -> None:
    for key, seqs in found.items():
        assert seqs == sorted(set(seqs)), f"{key}: lines out of order or repeated"


def dropped_in_events(events: EventStream, watcher: str) -> int:
    """Lines reported dropped so far by `watcher.<watcher>.dropped` events."""
    events.drain()
    return sum(
        payload["lines"] for topic, payload in events.seen if topic == f"watcher.{watcher}.dropped"
    )


# -- files ---------------------------------------------------------------------------------------


def test_processes_writing_at_full_speed_into_one_file_lose_and_tear_nothing(
    circus: Circus,
) -> None:
    lines = 20000
    out = circus.tmp / "shared.log"
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {writer_command(circus, "w", "--lines", str(lines), "--stderr", "--chunk", "4093")}
        numprocesses = 4
        stdout_stream.class = FileStream
        stdout_stream.filename = {out}
        stderr_stream.class = circus.stream.FileStream
        stderr_stream.filename = {out}
        """)
    circus.start(config)
    expected = 4 * 2 * lines
    wait_until(lambda: line_count([out]) >= expected, 30, f"{expected} lines in {out}",
               circus.log_tails)
    found = parse_lines(out.read_bytes(), str(out))
    keys = [("w", wid, stream) for wid in (1, 2, 3, 4) for stream in ("out", "err")]
    assert sorted(found) == sorted(keys)
    assert_complete(found, keys, lines)


def test_one_file_per_process_and_time_format_per_line(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {writer_command(circus, "w", "--lines", "3000", "--chunk", "1000")}
        numprocesses = 2
        stdout_stream.filename = {circus.tmp}/w.$(circus.wid).log
        stdout_stream.time_format = %H:%M:%S
        """)
    circus.start(config)
    paths = {wid: circus.tmp / f"w.{wid}.log" for wid in (1, 2)}
    wait_until(lambda: all(line_count([p]) >= 3000 for p in paths.values()), 20,
               "3000 lines in each file", circus.log_tails)
    for wid, path in paths.items():
        prefixed = re.compile(rb"\d\d:\d\d:\d\d \[(\d+)\] \| ")
        data = path.read_bytes()
        pids = set(prefixed.findall(data))
        assert len(pids) == 1, f"{path}: lines of more than one process: {pids}"
        found = parse_lines(prefixed.sub(b"", data), str(path))
        assert_complete(found, [("w", wid, "out")], 3000)


def test_size_rotation_keeps_every_line_whole_and_in_order(circus: Circus) -> None:
    lines, max_bytes = 6000, 60000
    out = circus.tmp / "rot.log"
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {writer_command(circus, "w", "--lines", str(lines))}
        numprocesses = 3
        stdout_stream.class = FileStream
        stdout_stream.filename = {out}
        stdout_stream.max_bytes = {max_bytes}
        stdout_stream.backup_count = 1000
        """)
    circus.start(config)

    def files() -> list[Path]:
        backups = sorted(
            circus.tmp.glob("rot.log.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]),
            reverse=True,
        )
        return [*backups, out]

    wait_until(lambda: line_count(files()) >= 3 * lines, 30, "every line written",
               circus.log_tails)
    paths = files()
    assert len(paths) > 10, "rotated"
    for path in paths:
        assert path.stat().st_size <= max_bytes, f"{path} is larger than max_bytes"
    found = parse_lines(read_files(paths), "rotated files")
    assert_complete(found, [("w", wid, "out") for wid in (1, 2, 3)], lines)


def test_timed_rotation_every_second(circus: Circus) -> None:
    lines = 2500
    out = circus.tmp / "timed.log"
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {writer_command(circus, "w", "--lines", str(lines), "--rate", "1000")}
        stdout_stream.class = TimedRotatingFileStream
        stdout_stream.filename = {out}
        stdout_stream.rotate_when = s
        stdout_stream.rotate_interval = 1
        stdout_stream.utc = true
        """)
    circus.start(config)

    def files() -> list[Path]:
        return [*sorted(circus.tmp.glob("timed.log.*")), out]

    wait_until(lambda: (circus.tmp / "w.1.done").exists(), 20, "the writer to finish")
    wait_until(lambda: line_count(files()) >= lines, 10, "every line written", circus.log_tails)
    rotated = files()[:-1]
    assert len(rotated) >= 2, f"rotated at least twice in {lines / 1000:g} s: {rotated}"
    for path in rotated:
        assert re.fullmatch(r"timed\.log\.\d{14}", path.name)
    found = parse_lines(read_files(files()), "timed rotation")
    assert_complete(found, [("w", 1, "out")], lines)


def test_watched_file_is_reopened_after_an_external_mv(circus: Circus) -> None:
    lines = 3000
    out = circus.tmp / "watched.log"
    moved = circus.tmp / "watched.log.1"
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {writer_command(circus, "w", "--lines", str(lines), "--rate", "2000")}
        stdout_stream.class = WatchedFileStream
        stdout_stream.filename = {out}
        """)
    circus.start(config)
    wait_until(lambda: line_count([out]) >= 300, 10, "some lines", circus.log_tails)
    subprocess.run(["mv", str(out), str(moved)], check=True)
    wait_until(lambda: out.exists(), 5, f"{out} to be created again", circus.log_tails)
    wait_until(lambda: line_count([moved, out]) >= lines, 10, "every line", circus.log_tails)
    before, after = parse_lines(moved.read_bytes()), parse_lines(out.read_bytes())
    assert before and after, "lines on both sides of the move"
    found = parse_lines(read_files([moved, out]), "moved + new file")
    assert_complete(found, [("w", 1, "out")], lines)


def test_long_lines_are_split_with_a_marker(circus: Circus) -> None:
    out = circus.tmp / "long.log"
    tail = "T" * 2500
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {writer_command(circus, "w", "--lines", "10", "--tail", tail)}
        max_line = 1000
        stdout_stream.filename = {out}
        """)
    arbiter = circus.start(config)
    wait_until(lambda: (circus.tmp / "w.1.done").exists(), 10, "the writer to finish")
    arbiter.stop()  # the unterminated last line is flushed at EOF
    data = out.read_bytes()
    marked = SPLIT_MARKER + b"\n"
    assert data.endswith(b"T" * 1000 + marked + b"T" * 1000 + marked + b"T" * 500 + b"\n")
    body = data[: data.index(b"T")]
    assert_complete(parse_lines(body), [("w", 1, "out")], 10)


# -- the default stream and user classes ---------------------------------------------------------


def test_default_is_the_arbiters_output_prefixed_by_name_and_wid(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {writer_command(circus, "w", "--lines", "200", "--stderr", "--chunk", "333")}
        numprocesses = 2
        """)
    arbiter = circus.start(config)
    keys = [("w", wid, stream) for wid in (1, 2) for stream in ("out", "err")]

    def child_lines() -> bytes:
        prefixed = re.compile(rb"^w\[(\d)\] (.*)$", re.MULTILINE)
        text = arbiter.log_path.read_bytes()
        found = [m for m in prefixed.finditer(text)]
        for match in found:
            assert match[2].startswith(b"w " + match[1] + b" "), "prefix names the right wid"
        return b"".join(m[2] + b"\n" for m in found)

    wait_until(lambda: child_lines().count(b"\n") >= 800, 10, "800 prefixed lines",
               arbiter.log_tail)
    assert_complete(parse_lines(child_lines(), "arbiter output"), keys, 200)


def test_a_user_class_gets_data_pid_and_name(circus: Circus) -> None:
    package = circus.tmp / "usercls"
    package.mkdir()
    (package / "collect.py").write_text(
        "class Collector:\n"
        "    def __init__(self, directory, **options):\n"
        "        self.directory = directory\n"
        "    def __call__(self, data):\n"
        "        assert sorted(data) == ['data', 'name', 'pid'], data\n"
        "        path = '%s/%s.%d' % (self.directory, data['name'], data['pid'])\n"
        "        with open(path, 'ab') as f:\n"
        "            f.write(data['data'])\n"
    )
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {writer_command(circus, "w", "--lines", "500", "--stderr", "--chunk", "777")}
        stdout_stream.class = collect.Collector
        stdout_stream.directory = {circus.tmp}
        stderr_stream.class = collect.Collector
        stderr_stream.directory = {circus.tmp}
        """)
    circus.start(config, env={**os.environ, "PYTHONPATH": str(package)})
    out = wait_until(lambda: next(circus.tmp.glob("stdout.*"), None), 10, "stdout calls",
                     circus.log_tails)
    err = wait_until(lambda: next(circus.tmp.glob("stderr.*"), None), 10, "stderr calls")
    assert out.name.split(".")[1] == err.name.split(".")[1], "the process's pid"
    wait_until(lambda: line_count([out, err]) >= 1000, 10, "every line", circus.log_tails)
    found = parse_lines(out.read_bytes() + err.read_bytes())
    assert_complete(found, [("w", 1, "out"), ("w", 1, "err")], 500)


def test_a_user_class_that_always_raises_only_loses_its_own_lines(
    circus: Circus, zmq_clients: Clients
) -> None:
    package = circus.tmp / "usercls"
    package.mkdir()
    (package / "broken.py").write_text(
        "class Broken:\n"
        "    def __init__(self, **options):\n"
        "        pass\n"
        "    def __call__(self, data):\n"
        "        raise RuntimeError('nowhere to write')\n"
    )
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {writer_command(circus, "w", "--lines", "1000000", "--rate", "500")}
        backpressure_timeout = 0.3
        stdout_stream.class = broken.Broken

        [watcher:other]
        cmd = {report_command(circus.tmp, "other")}
        """)
    arbiter = circus.start(config, env={**os.environ, "PYTHONPATH": str(package)})
    events = zmq_clients.events(events_endpoint(circus.tmp))
    # The policy of any failing sink: retried, the writer is slowed, then lines are dropped,
    # counted and reported; the class's error is in the log.
    arbiter.wait_log(r"broken\.Broken failed: RuntimeError\('nowhere to write'\)", timeout=5)
    dropped = events.wait("watcher.w.dropped", timeout=10)
    assert dropped["lines"] > 0 and dropped["sink"] == "stream class broken.Broken"
    first = circus.reports.wait("other", 1)
    os.kill(first["pid"], signal.SIGKILL)
    circus.reports.wait("other", 1, not_pid=first["pid"])
    # The writer is not blocked for good: its lines keep coming, and keep being dropped (one
    # report a second), not queued.
    later = events.wait("watcher.w.dropped", lambda payload: payload is not dropped, timeout=5)
    assert later["lines"] > 0
    assert arbiter.process.memory_info().rss < 200 << 20
    # `stats` keeps the totals since the start: at least what the events said so far.
    control = zmq_clients.control(control_endpoint(circus.tmp))
    reported = sum(p["lines"] for t, p in events.seen if t == "watcher.w.dropped")
    totals = control.ok("stats", name="w")["dropped"]
    assert totals["lines"] >= reported and totals["bytes"] > 0
    assert control.ok("stats")["dropped"]["other"] == {"lines": 0, "bytes": 0}


# -- faults --------------------------------------------------------------------------------------


def test_a_deleted_log_directory_drops_counted_lines_and_recovers(
    circus: Circus, zmq_clients: Clients
) -> None:
    logs = circus.tmp / "logs"
    logs.mkdir()
    out = logs / "w.log"
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {writer_command(circus, "w", "--lines", "1000000", "--rate", "500")}
        backpressure_timeout = 0.3
        stdout_stream.class = WatchedFileStream
        stdout_stream.filename = {out}

        [watcher:other]
        cmd = {report_command(circus.tmp, "other")}
        """)
    arbiter = circus.start(config)
    events = zmq_clients.events(events_endpoint(circus.tmp))
    wait_until(lambda: line_count([out]) >= 50, 10, "lines in the log", arbiter.log_tail)

    shutil.rmtree(logs)
    arbiter.wait_log(r"cannot open .*w\.log: No such file or directory", timeout=5)
    dropped = events.wait("watcher.w.dropped", timeout=10)
    assert dropped["lines"] > 0 and dropped["bytes"] > 0 and dropped["stream"] == "stdout"
    arbiter.wait_log(r"w: dropped \d+ line\(s\) \(\d+ bytes\) of stdout for file ")
    # Supervision goes on while the sink fails.
    first = circus.reports.wait("other", 1)
    os.kill(first["pid"], signal.SIGKILL)
    circus.reports.wait("other", 1, not_pid=first["pid"])

    logs.mkdir()
    arbiter.wait_log(r"file .*w\.log works again", timeout=10)
    wait_until(lambda: line_count([out]) >= 100, 10, "lines in the new log", arbiter.log_tail)
    found = parse_lines(out.read_bytes(), "the new log")
    assert_in_order(found)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted at the end (after the arbiter: request it before `circus`)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """A file that takes every free block of `directory`'s filesystem."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


def test_a_full_filesystem_drops_counted_lines_and_recovers(
    small_tmpfs: Path, circus: Circus, zmq_clients: Clients
) -> None:
    lines = 3000
    out = small_tmpfs / "w.log"
    filler = fill(small_tmpfs)
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {writer_command(circus, "w", "--lines", str(lines), "--rate", "1500")}
        backpressure_timeout = 0.3
        stdout_stream.class = FileStream
        stdout_stream.filename = {out}

        [watcher:other]
        cmd = {report_command(circus.tmp, "other")}
        """)
    arbiter = circus.start(config)
    events = zmq_clients.events(events_endpoint(circus.tmp))
    arbiter.wait_log(r"cannot write .*w\.log: No space left on device", timeout=5)
    events.wait("watcher.w.dropped", timeout=10)
    first = circus.reports.wait("other", 1)
    os.kill(first["pid"], signal.SIGKILL)
    circus.reports.wait("other", 1, not_pid=first["pid"])

    filler.unlink()
    arbiter.wait_log(r"file .*w\.log works again", timeout=10)
    wait_until(lambda: (circus.tmp / "w.1.done").exists(), 10, "the writer to finish")
    # Every line either landed whole or was counted as dropped.
    wait_until(
        lambda: line_count([out]) + dropped_in_events(events, "w") >= lines,
        10,
        "landed + dropped lines to add up",
        arbiter.log_tail,
    )
    found = parse_lines(out.read_bytes(), str(out))
    assert_in_order(found)
    landed = len(found[("w", 1, "out")])
    assert 0 < landed < lines
    assert landed + dropped_in_events(events, "w") == lines
    arbiter.wait_log(r"w: dropped \d+ line\(s\) \(\d+ bytes\) of stdout for file .*w\.log")
    assert found[("w", 1, "out")][-1] == lines - 1, "writing resumed"


# -- journald's stream socket, connected by the child itself (no journald needed) ----------------


def _spawn_with_journal_stream(
    socket_path: Path, command: str
) -> tuple[int, bytes]:
    """Spawn `sh -c command` with stdout to journald at `socket_path`, or the pipe as fallback.

    Returns the child's pid and what reached the pipe.
    """

    async def scenario() -> tuple[int, bytes]:
        spawner = Spawner(*fork_spawner())
        spawner.attach(asyncio.get_running_loop())
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            request = SpawnRequest(
                executable="/bin/sh",
                argv=("sh", "-c", command),
                env={},
                fd_targets=(1,),
                journal_streams=(
                    JournalStreamSetup(1, "web", 6, True, socket_path=str(socket_path)),
                ),
            )
            pid, status_fd = await asyncio.wait_for(spawner.spawn(request, [write_fd]), 5)
            os.close(write_fd)
            os.close(status_fd)
            piped = b""
            while chunk := await asyncio.to_thread(os.read, read_fd, 65536):
                piped += chunk
            await asyncio.to_thread(os.waitpid, pid, 0)
            return pid, piped
        finally:
            os.close(read_fd)
            with contextlib.suppress(OSError):
                os.close(write_fd)
            spawner.close()
            os.waitpid(spawner.pid, 0)

    return asyncio.run(scenario())


def test_direct_mode_connects_the_child_to_journalds_stream_socket(tmp_path: Path) -> None:
    path = tmp_path / "stdout"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        # No thread here (the spawner is forked from this process): the child's connection
        # waits in the backlog, its few bytes in the socket buffer.
        pid, piped = _spawn_with_journal_stream(path, "echo hello; echo '<3>bad'")
        server.settimeout(5)
        conn, _ = server.accept()
        with conn:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
    assert piped == b"", f"output went through the arbiter's pipe: {piped!r}"
    assert struct.unpack("3i", creds)[0] == pid, "journald would see the child's own pid"
    assert data == b"web\n\n6\n1\n0\n0\n0\nhello\n<3>bad\n", "the header, then the lines"


def test_direct_mode_falls_back_to_the_pipe_without_journald(tmp_path: Path) -> None:
    _pid, piped = _spawn_with_journal_stream(tmp_path / "missing", "echo via the arbiter")
    assert piped == b"via the arbiter\n"
