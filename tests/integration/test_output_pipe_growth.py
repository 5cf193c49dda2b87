"""How big a process's stdout pipe is, as the process itself sees it (F_GETPIPE_SZ on its fd 1).

Root (with CAP_SYS_ADMIN or CAP_SYS_RESOURCE, whose pipes the kernel does not count) gives every
pipe 1 MiB at once. An arbiter run by another user grows only a pipe it finds full, within its
share of the user's `fs.pipe-user-pages-soft`; a quiet process keeps the kernel's 64 KiB."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from arbiter_harness import CIRCUS_SD, Arbiter, Circus, child_command, wait_until
from test_streams import assert_complete, line_count, parse_lines

from circus_sd.output.pipe_sizes import PIPE_MAX, user_limit

pytestmark = pytest.mark.timeout(60)

DEFAULT_PIPE = 16 * 4096  # the kernel's
# uid 65534 (nobody), with CAP_DAC_OVERRIDE alone so that it can run the venv's interpreter
# (under /root) and use the test's directory; neither capability that lifts the pipe limits.
NOT_ROOT = (
    "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
    "--inh-caps=-all,+dac_override", "--ambient-caps=+dac_override",
)


def filler(circus: Circus, name: str, target: int, lines: int) -> str:
    return f"""
        [watcher:{name}]
        cmd = {child_command("pipe_filler.py", circus.tmp, name, str(target), str(lines))}
        stdout_stream.class = FileStream
        stdout_stream.filename = {circus.tmp}/{name}.log
        """


def capacity_report(circus: Circus, name: str) -> tuple[int, int]:
    """(lines written, pipe size) that the filler reported."""
    path = circus.tmp / f"{name}.1.capacity"
    wait_until(path.exists, 30, f"{path}", circus.log_tails)
    written, capacity = path.read_text().split()
    return int(written), int(capacity)


def start_not_root(circus: Circus, config: Path) -> Arbiter:
    """circus.start, but as NOT_ROOT."""
    log_path = circus.tmp / f"arbiter-{len(circus.arbiters) + 1}.log"
    env = dict(os.environ, XDG_RUNTIME_DIR=str(circus.world_dir()))
    with open(log_path, "wb") as log, open(os.devnull, "rb") as stdin:
        popen = subprocess.Popen(
            [*NOT_ROOT, str(CIRCUS_SD), str(config)],
            stdin=stdin, stdout=log, stderr=log, cwd=circus.tmp, env=env,
        )
    arbiter = Arbiter(popen, log_path)
    circus.arbiters.append(arbiter)
    wait_until(
        lambda: "circus-sd running" in arbiter.log() or not arbiter.running(),
        10.0, "circus-sd to log that it is running", arbiter.log_tail,
    )
    assert arbiter.running(), f"circus-sd exited at start-up\n{arbiter.log_tail()}"
    return arbiter


@pytest.mark.skipif(user_limit() is not None, reason="the kernel counts this root's pipes")
def test_root_gives_a_process_a_1_mib_pipe_at_once(circus: Circus) -> None:
    circus.start(circus.write_config(filler(circus, "quiet", PIPE_MAX, 0)))
    assert capacity_report(circus, "quiet") == (0, PIPE_MAX)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to start the arbiter as nobody")
def test_not_root_a_full_pipe_grows_and_a_quiet_one_does_not(circus: Circus) -> None:
    lines = 300_000  # ~20 MB: far more than a full 64 KiB pipe, many times over
    config = circus.write_config(
        filler(circus, "busy", 4 * DEFAULT_PIPE, lines) + filler(circus, "quiet", PIPE_MAX, 0)
    )
    start_not_root(circus, config)
    # Grown at least once (fourfold); whether it is found full again at 256 KiB depends on
    # which of the writer and the arbiter is faster.
    written, capacity = capacity_report(circus, "busy")
    assert capacity >= 4 * DEFAULT_PIPE, f"the busy pipe is {capacity} bytes after {written} lines"
    assert capacity_report(circus, "quiet") == (0, DEFAULT_PIPE)
    # Growing a pipe while it is full loses and tears nothing.
    out = circus.tmp / "busy.log"
    wait_until(lambda: line_count([out]) >= written, 30, f"{written} lines in {out}",
               circus.log_tails)
    assert_complete(parse_lines(out.read_bytes(), str(out)), [("busy", 1, "out")], written)
