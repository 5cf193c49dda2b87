"""Losing the spawner: killed or stopped, it is replaced; the running processes go on."""

from __future__ import annotations

import signal

import psutil
import pytest
from arbiter_harness import Arbiter, Circus, alive_process, gone, report_command, wait_until
from control_helpers import real_pids, wait_count

# A stopped spawner is found out after spawn_client.ANSWER_DEADLINE (5 s); this bounds a hang.
pytestmark = pytest.mark.timeout(60)
# The answer deadline, the restart and a respawn, on a loaded machine.
REPLACED_WITHIN = 15.0


def spawners(arbiter: Arbiter) -> list[psutil.Process]:
    """The arbiter's children that show its own command line: its spawner(s), killed or not."""
    own = arbiter.process.cmdline()
    found = []
    for child in arbiter.process.children():
        try:
            if child.cmdline() == own:
                found.append(child)
        except psutil.Error:
            continue
    return found


def the_spawner(arbiter: Arbiter) -> psutil.Process:
    found = spawners(arbiter)
    assert len(found) == 1, f"one spawner expected, found {found}"
    return found[0]


def new_spawner(arbiter: Arbiter, old: psutil.Process) -> psutil.Process:
    """Wait until the old spawner is gone and another one runs."""

    def replaced() -> psutil.Process | None:
        found = [p for p in spawners(arbiter) if p.pid != old.pid and alive_process(p)]
        return found[0] if found and gone(old) else None

    return wait_until(replaced, REPLACED_WITHIN, "a new spawner", arbiter.log_tail)


def start_web(circus: Circus) -> tuple[Arbiter, list[int]]:
    config = circus.write_config(f"""
        [watcher:web]
        cmd = {report_command(circus.tmp, "web")}
        numprocesses = 2
        """)
    arbiter = circus.start(config)
    return arbiter, wait_count(arbiter, "web", 2)


def replacement_of(arbiter: Arbiter, victim: int, others: list[int]) -> list[int]:
    """Kill a worker; wait until a new one took its place (the others unchanged)."""
    psutil.Process(victim).kill()

    def replaced() -> list[int] | None:
        now = real_pids(arbiter, "web")
        ok = len(now) == 2 and victim not in now and set(others) <= set(now)
        return now if ok else None

    return wait_until(replaced, REPLACED_WITHIN, f"a replacement of pid {victim}",
                      arbiter.log_tail)


def test_a_killed_spawner_is_replaced_and_the_workers_keep_running(circus: Circus) -> None:
    arbiter, workers = start_web(circus)
    old = the_spawner(arbiter)

    old.send_signal(signal.SIGKILL)

    new_spawner(arbiter, old)
    assert arbiter.running()
    assert real_pids(arbiter, "web") == workers, "the running processes keep their pids"
    arbiter.wait_log(rf"lost the spawner \(pid {old.pid}\)")
    # The new spawner starts the replacement of a worker that dies.
    replacement_of(arbiter, workers[0], workers[1:])
    assert arbiter.stop() == 0


def test_a_stopped_spawner_is_killed_and_replaced_and_quit_completes(circus: Circus) -> None:
    arbiter, workers = start_web(circus)
    old = the_spawner(arbiter)

    old.send_signal(signal.SIGSTOP)
    # The respawn goes to the stopped spawner, which answers nothing: found out, killed,
    # replaced, and the respawn tried again.
    replacement_of(arbiter, workers[0], workers[1:])

    assert gone(old)
    arbiter.wait_log(rf"lost the spawner \(pid {old.pid}\): it answered nothing for \d+ s")
    assert arbiter.stop(timeout=5.0) == 0


def test_quit_completes_while_the_spawner_is_stopped(circus: Circus) -> None:
    arbiter, _workers = start_web(circus)
    old = the_spawner(arbiter)

    old.send_signal(signal.SIGSTOP)

    assert arbiter.stop(timeout=5.0) == 0
    assert gone(old)
