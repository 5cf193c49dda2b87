"""Daemons left behind by respawning workers, without cgroups: stopped with their watcher.

The workers are not ours: a shell one-liner and the classic double fork (without setsid). Each
start leaves one daemon, adopted by the arbiter (a child subreaper); `circusctl stop`, `restart`
and `rm` must stop them, not only the arbiter's exit.
"""

from __future__ import annotations

import shlex
import subprocess
import textwrap
from pathlib import Path

import pytest
from arbiter_harness import ROOT, Arbiter, Circus, alive, child_command, read_lines, wait_until

pytestmark = pytest.mark.timeout(60)

CIRCUSCTL = ROOT / ".venv" / "bin" / "circusctl"
# Starts to wait for: each leaves a daemon behind.
STARTS = 3
# The classic double fork without setsid, a daemon that ignores SIGTERM, a worker that exits.
DOUBLE_FORK = ("--keep-session", "--ignore-term", "--exit")


def circusctl(circus: Circus, *args: str) -> str:
    result = subprocess.run(
        [str(CIRCUSCTL), "--endpoint", f"ipc://{circus.tmp}/control.sock", *args],
        capture_output=True, text=True, timeout=20, check=False,
    )
    assert (result.returncode, result.stderr) == (0, ""), result
    return result.stdout


def daemons(path: Path, arbiter: Arbiter, count: int, after: int = 0) -> list[int]:
    """Wait until `count` daemons wrote their pid to `path` (past its first `after` lines),
    each adopted by the arbiter; those pids."""

    def adopted() -> list[int] | None:
        pids = [int(line) for line in read_lines(path)[after:]]
        if len(pids) < count:
            return None
        children = {child.pid for child in arbiter.process.children()}
        return pids if all(pid in children and alive(pid) for pid in pids) else None

    return wait_until(adopted, 10.0, f"{count} daemons adopted by the arbiter", arbiter.log_tail)


def no_cgroups(circus: Circus, sections: str) -> Path:
    # Tracking by pid is the point: no per-watcher cgroups even where they could be had.
    return circus.write_config("[circus]\ncgroup = off\n\n" + textwrap.dedent(sections))


def test_circusctl_stop_stops_the_daemons_a_respawning_shell_left(circus: Circus) -> None:
    daemon_file = circus.tmp / "daemons"
    # A subshell starts `sleep` in the background and exits: the sleep is orphaned, still in
    # the worker's session. The worker exits soon after, and is started again.
    script = f"( sleep 1000 & echo $! >> {shlex.quote(str(daemon_file))} ); sleep 0.3"
    config = no_cgroups(circus, f"""
        [watcher:web]
        cmd = /bin/sh -c {shlex.quote(script)}
        min_uptime = 0.1
        check_flapping = false
        graceful_timeout = 5
        """)
    arbiter = circus.start(config)
    left = daemons(daemon_file, arbiter, STARTS)
    assert all(alive(pid) for pid in left), "a running watcher's daemons are left alone"

    circusctl(circus, "stop", "web", "--waiting")

    still = [pid for pid in read_lines(daemon_file) if alive(int(pid))]
    assert not still, f"daemons still running after `circusctl stop`: {still}"
    assert arbiter.running()
    assert "left behind by its process" in arbiter.log()
    assert "SIGKILL" not in arbiter.log(), "sleep stops on SIGTERM"


def test_restart_and_rm_stop_daemons_of_the_classic_double_fork(circus: Circus) -> None:
    """The daemons ignore SIGTERM: SIGKILL follows after the watcher's graceful_timeout."""
    daemon_file = circus.tmp / "worker.daemons"
    config = no_cgroups(circus, f"""
        [watcher:worker]
        cmd = {child_command("daemonizer.py", circus.tmp, "worker", *DOUBLE_FORK)}
        min_uptime = 0.1
        check_flapping = false
        graceful_timeout = 0.5
        """)
    arbiter = circus.start(config)
    before = daemons(daemon_file, arbiter, STARTS)

    circusctl(circus, "restart", "worker", "--waiting")

    still = [pid for pid in before if alive(pid)]
    assert not still, f"daemons of the old processes still running after a restart: {still}"
    assert "still running after graceful_timeout: SIGKILL" in arbiter.log()
    # Started again: new processes leave new daemons, which `rm` stops.
    daemons(daemon_file, arbiter, 1, after=len(read_lines(daemon_file)))

    circusctl(circus, "rm", "worker", "--waiting")

    still = [pid for pid in read_lines(daemon_file) if alive(int(pid))]
    assert not still, f"daemons still running after `circusctl rm`: {still}"
    assert arbiter.running()
