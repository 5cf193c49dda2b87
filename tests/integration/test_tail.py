"""`circusctl tail`: a watcher's history from its file, then its output followed live through the
arbiter's output socket."""

from __future__ import annotations

import os
import queue
import re
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from arbiter_harness import ROOT, Circus, child_command

pytestmark = pytest.mark.timeout(60)

CIRCUSCTL = ROOT / ".venv" / "bin" / "circusctl"
# writer.py's lines: `NAME WID S SEQ PAYLOAD`, PAYLOAD's length given by SEQ.
LINE = re.compile(rb"(?:chatty\[(\d)\] )?chatty (\d) (out|err) (\d{8}) (p*)\n")


def start_chatty(circus: Circus, extra: str = "") -> None:
    writer = child_command(
        "writer.py", circus.tmp, "chatty", "--rate", "300", "--lines", "1000000", "--stderr"
    )
    config = circus.write_config(f"""
        [circus]
        {extra}

        [watcher:chatty]
        cmd = {writer}
        numprocesses = 2
        stdout_stream.class = FileStream
        stdout_stream.filename = {circus.tmp}/chatty.out
        """)
    circus.start(config)


class Tail:
    """A running `circusctl tail ...`, its output lines queued by a thread."""

    def __init__(self, circus: Circus, *args: str) -> None:
        self.popen = subprocess.Popen(
            [str(CIRCUSCTL), "--endpoint", f"ipc://{circus.tmp}/control.sock", "tail", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)

    def collect(self, enough: int, timeout: float = 15.0) -> list[bytes]:
        """Lines until `enough` arrived (a subscription takes effect a little after connecting)."""
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(got) < enough:
            left = deadline - time.monotonic()
            if left <= 0 or self.popen.poll() is not None:
                ended = self.popen.stderr is not None and self.popen.poll() is not None
                stderr = self.popen.stderr.read() if ended and self.popen.stderr else b""
                raise AssertionError(f"{len(got)} of {enough} lines; tail said {stderr!r}")
            try:
                got.append(self.lines.get(timeout=min(left, 1.0)))
            except queue.Empty:
                continue
        return got

    def stop(self) -> int:
        self.popen.send_signal(signal.SIGINT)
        status = self.popen.wait(5.0)
        self.close()
        return status

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5.0)
        self._reader.join(5.0)
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def tails() -> Iterator[list[Tail]]:
    started: list[Tail] = []
    yield started
    for tail in started:
        tail.close()


def check_in_order(lines: list[bytes], prefixed: bool) -> set[tuple[int, bytes]]:
    """Every line intact; per process and stream, consecutive numbers. The (wid, stream)s seen."""
    last: dict[tuple[int, bytes], int] = {}
    for line in lines:
        match = LINE.fullmatch(line)
        assert match, line
        prefix_wid, wid, stream, seq, payload = match.groups()
        assert (prefix_wid is not None) == prefixed, line
        if prefixed:
            assert prefix_wid == wid
        number = int(seq)
        assert len(payload) == number * 7 % 91, line
        key = (int(wid), stream)
        if key in last:
            assert number == last[key] + 1, f"{key}: {number} after {last[key]}"
        last[key] = number
    return set(last)


def test_tail_follows_every_process_and_stream_line_by_line(
    circus: Circus, tails: list[Tail]
) -> None:
    start_chatty(circus)
    tail = Tail(circus, "chatty", "-n", "0")  # live lines only: the history has no wid
    tails.append(tail)
    lines = tail.collect(600)
    assert tail.stop() == 0
    assert check_in_order(lines, prefixed=True) == {(1, b"out"), (1, b"err"), (2, b"out"),
                                                    (2, b"err")}


def test_tail_of_one_stream_raw(circus: Circus, tails: list[Tail]) -> None:
    start_chatty(circus)
    tail = Tail(circus, "chatty", "--stream", "stderr", "--raw", "-n", "0")
    tails.append(tail)
    lines = tail.collect(300)
    assert tail.stop() == 0
    assert check_in_order(lines, prefixed=False) == {(1, b"err"), (2, b"err")}


def test_the_output_socket_is_private_and_tail_knows_unknown_watchers(circus: Circus) -> None:
    start_chatty(circus)
    mode = os.stat(circus.tmp / "control-output.sock").st_mode
    assert stat.S_IMODE(mode) == 0o600
    result = subprocess.run(
        [str(CIRCUSCTL), "--endpoint", f"ipc://{circus.tmp}/control.sock", "tail", "nosuch"],
        capture_output=True, text=True, timeout=15, check=False,
    )
    assert result.returncode == 3
    assert "nosuch" in result.stderr


def test_tail_says_when_the_arbiter_publishes_no_output(circus: Circus) -> None:
    start_chatty(circus, "output_endpoint = off")
    assert not Path(circus.tmp / "control-output.sock").exists()
    result = subprocess.run(
        [str(CIRCUSCTL), "--endpoint", f"ipc://{circus.tmp}/control.sock", "tail", "chatty"],
        capture_output=True, text=True, timeout=15, check=False,
    )
    assert result.returncode == 1
    assert "output_endpoint = off" in result.stderr


def run_ctl(circus: Circus, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(CIRCUSCTL), "--endpoint", f"ipc://{circus.tmp}/control.sock", *args],
        capture_output=True, timeout=15, check=False, stdin=subprocess.DEVNULL,
    )


def start_counters(circus: Circus) -> Path:
    """Two watchers writing numbered lines to one file each; returns the directory."""
    config = circus.write_config(f"""
        [watcher:count-a]
        cmd = sh -c 'i=0; while [ $i -lt 50 ]; do i=$((i+1)); echo "a $i"; done; exec sleep 600'
        stdout_stream.class = FileStream
        stdout_stream.filename = {circus.tmp}/a.out

        [watcher:count-b]
        cmd = sh -c 'i=0; while [ $i -lt 50 ]; do i=$((i+1)); echo "b $i"; done; exec sleep 600'
        stdout_stream.class = FileStream
        stdout_stream.filename = {circus.tmp}/b.out
        """)
    circus.start(config)
    for name in ("a", "b"):
        wait_for_line(circus.tmp / f"{name}.out", f"{name} 50\n".encode())
    return circus.tmp


def wait_for_line(path: Path, line: bytes) -> None:
    from arbiter_harness import wait_until

    wait_until(lambda: path.exists() and path.read_bytes().endswith(line), 10.0,
               f"{line!r} in {path}")


def test_tail_n_of_a_file_stream_prints_exactly_the_last_lines(circus: Circus) -> None:
    start_counters(circus)
    result = run_ctl(circus, "tail", "-n", "3", "--no-follow", "count-a")
    assert (result.returncode, result.stdout) == (0, b"count-a[-] a 48\ncount-a[-] a 49\n"
                                                     b"count-a[-] a 50\n"), result
    # Several names and globs, each watcher's lines in turn; --raw leaves the prefix out.
    result = run_ctl(circus, "tail", "--no-follow", "--lines=2", "count-*")
    assert result.stdout.splitlines() == [b"count-a[-] a 49", b"count-a[-] a 50",
                                          b"count-b[-] b 49", b"count-b[-] b 50"], result
    result = run_ctl(circus, "tail", "--no-follow", "-n1", "--raw", "count-b", "count-a")
    assert result.stdout == b"b 50\na 50\n"
    assert run_ctl(circus, "tail", "--no-follow", "-n", "0", "count-a").stdout == b""
    unknown = run_ctl(circus, "tail", "--no-follow", "count-a", "nosuch*")
    assert unknown.returncode == 3 and b"nosuch*" in unknown.stderr and not unknown.stdout
    bad = run_ctl(circus, "tail", "--since", "last tuesday", "count-a")
    assert bad.returncode == 2 and b"--since: expected" in bad.stderr


def test_tail_shows_history_then_follows_live(circus: Circus, tails: list[Tail]) -> None:
    start_chatty(circus)
    out = circus.tmp / "chatty.out"
    from arbiter_harness import wait_until

    wait_until(lambda: out.exists() and out.stat().st_size > 10_000, 10.0, "chatty's history")
    tail = Tail(circus, "chatty", "-n", "5", "--stream", "stdout")
    tails.append(tail)
    lines = tail.collect(200)
    assert tail.stop() == 0
    history, live = lines[:5], lines[5:]
    # The history comes from the file, which does not say which process wrote a line.
    assert all(line.startswith(b"chatty[-] chatty ") for line in history), history
    assert all(LINE.fullmatch(line) for line in live), live[:3]
    # Live lines follow the history: per process, the numbers go on from the history's.
    seen: dict[bytes, int] = {}
    for line in history:
        match = re.fullmatch(rb"chatty\[-\] chatty (\d) out (\d{8}) p*\n", line)
        assert match, line
        seen[match[1]] = int(match[2])
    for line in live:
        match = LINE.fullmatch(line)
        assert match
        wid, number = match[2], int(match[4])
        if wid in seen:
            assert number > seen[wid], (line, seen)
