"""What the machine itself can do, measured in the same run: the floor under every supervisor."""

from __future__ import annotations

import contextlib
import os
import signal
import time

from bench.announce import Registry
from bench.logcheck import LINE_BYTES, LogCheck, check, wait_landed


def spawn_true_rate(duration: float) -> float:
    """posix_spawn /bin/true and reap it, one after the other: processes per second."""
    env = dict(os.environ)
    count, start = 0, time.monotonic()
    end = start + duration
    while time.monotonic() < end:
        pid = os.posix_spawn("/bin/true", ["true"], env)
        os.waitpid(pid, 0)
        count += 1
    return count / (time.monotonic() - start)


def _kill_and_reap(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def burst(child: str, run_dir: str, n: int, timeout: float) -> tuple[float, float, float]:
    """posix_spawn N bench-children back to back.

    Returns (seconds until the spawn calls returned, until all N exist, SIGTERM to all until all
    are reaped): the machine's floor for a supervisor's spawn and stop of N.
    """
    env = dict(os.environ)
    path = os.path.join(run_dir, "burst.sock")
    pids: list[int] = []
    with Registry(path) as registry:
        try:
            t0 = time.monotonic()
            for _ in range(n):
                pids.append(os.posix_spawn(child, [child, path, "idle"], env))
            calls = time.monotonic() - t0
            born = registry.wait_born_after(t0, n, timeout)
            if born is None:
                raise TimeoutError(f"burst of {n}: only {len(registry.snapshot())} appeared")
            exist = born[-1].born - t0
            t1 = time.monotonic()
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
            for pid in pids:
                os.waitpid(pid, 0)
            stop = time.monotonic() - t1
            pids.clear()
            return calls, exist, stop
        finally:
            _kill_and_reap(pids)


def log_baseline(
    child: str, run_dir: str, writers: int, lines: int, mode: str, via_cat: bool, timeout: float
) -> tuple[float, LogCheck]:
    """`writers` bench-children write `lines` lines each into one file, straight (one O_APPEND
    open file shared by all) or through one pipe into `cat`. Returns (MB/s landed intact, check).
    """
    env = dict(os.environ)
    sock = os.path.join(run_dir, "log.sock")
    out_path = os.path.join(run_dir, "machine.log")
    pids: list[int] = []
    out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC)
    try:
        with Registry(sock) as registry:
            sink = out
            if via_cat:
                read_end, sink = os.pipe2(os.O_CLOEXEC)
                actions = [(os.POSIX_SPAWN_DUP2, read_end, 0), (os.POSIX_SPAWN_DUP2, out, 1)]
                pids.append(os.posix_spawn("/bin/cat", ["cat"], env, file_actions=actions))
                os.close(read_end)
            argv = [child, sock, "write", str(lines), mode]
            for _ in range(writers):
                actions = [(os.POSIX_SPAWN_DUP2, sink, 1)]
                pids.append(os.posix_spawn(child, argv, env, file_actions=actions))
            if via_cat:
                os.close(sink)
            if not registry.wait_alive(writers, timeout):
                raise TimeoutError("log writers did not start")
            t0 = time.monotonic()
            registry.go(registry.alive())
            if not registry.wait(lambda cs: all(c.done for c in cs), timeout):
                raise TimeoutError("log writers did not finish")
            landed = wait_landed(out_path, writers * lines * LINE_BYTES, 1.0, timeout)
            result = check(out_path, writers * lines)
            return result.intact_bytes / 1e6 / (landed - t0), result
    finally:
        os.close(out)
        # Writers exit when the registry closes their socket; cat exits at EOF on its pipe.
        _kill_and_reap(pids)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out_path)
