"""Issue 18's log workload from the outside: ten Python programs writing 8,000-byte chunks (more
than PIPE_BUF, cut anywhere in a line) at full speed, into one shared file or a file per watcher.
Every line must land whole, each process's lines all there and in order."""

from __future__ import annotations

import pytest
from arbiter_harness import Circus, wait_until
from test_streams import assert_complete, line_count, parse_lines, writer_command

pytestmark = pytest.mark.timeout(90)

WRITERS = 10
LINES = 20000  # ~1.4 MB per writer: many reads that end in the middle of a line
CHUNK = "8000"


def test_ten_python_writers_into_one_file_tear_and_lose_nothing(circus: Circus) -> None:
    out = circus.tmp / "shared.log"
    config = circus.write_config(f"""
        [watcher:py]
        cmd = {writer_command(circus, "py", "--lines", str(LINES), "--chunk", CHUNK)}
        numprocesses = {WRITERS}
        stdout_stream.class = FileStream
        stdout_stream.filename = {out}
        """)
    circus.start(config)
    expected = WRITERS * LINES
    wait_until(lambda: line_count([out]) >= expected, 60, f"{expected} lines in {out}",
               circus.log_tails)
    found = parse_lines(out.read_bytes(), str(out))
    keys = [("py", wid, "out") for wid in range(1, WRITERS + 1)]
    assert sorted(found) == sorted(keys)
    assert_complete(found, keys, LINES)


def test_ten_watchers_of_one_python_writer_each_fill_their_own_file(circus: Circus) -> None:
    sections = []
    for n in range(1, WRITERS + 1):
        name = f"py{n}"
        sections.append(f"""
        [watcher:{name}]
        cmd = {writer_command(circus, name, "--lines", str(LINES), "--chunk", CHUNK)}
        stdout_stream.class = FileStream
        stdout_stream.filename = {circus.tmp}/{name}.log
        """)
    circus.start(circus.write_config("".join(sections)))
    paths = {f"py{n}": circus.tmp / f"py{n}.log" for n in range(1, WRITERS + 1)}
    wait_until(lambda: all(line_count([p]) >= LINES for p in paths.values()), 60,
               f"{LINES} lines in each file", circus.log_tails)
    for name, path in paths.items():
        found = parse_lines(path.read_bytes(), str(path))
        assert sorted(found) == [(name, 1, "out")], f"{path}: lines of other watchers"
        assert_complete(found, [(name, 1, "out")], LINES)
