"""Losing the spawner: killed or stopped, it is replaced; the running processes go on."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import psutil
import pytest
from arbiter_harness import (
    CHILD_PYTHON,
    Arbiter,
    Circus,
    alive_process,
    gone,
    report_command,
    stays_equal,
    wait_until,
)
from control_helpers import Clients, clients, control_endpoint, real_pids, wait_count

# A stopped spawner is found out after spawner.ANSWER_DEADLINE (5 s); this bounds a hang.
pytestmark = pytest.mark.timeout(60)
# The answer deadline, the restart and a respawn, on a loaded machine.
REPLACED_WITHIN = 15.0


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


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


def test_a_lost_spawner_is_no_failed_start_whatever_max_retry_says(
    circus: Circus, zmq_clients: Clients
) -> None:
    """With max_retry = 0 a single failed start gives the watcher up: the respawn that a
    stopped spawner never answered is deferred instead, and asked of the next spawner."""
    config = circus.write_config(f"""
        [watcher:web]
        cmd = {report_command(circus.tmp, "web")}
        numprocesses = 2
        max_retry = 0
        """)
    arbiter = circus.start(config)
    workers = wait_count(arbiter, "web", 2)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    old = the_spawner(arbiter)

    old.send_signal(signal.SIGSTOP)
    replacement_of(arbiter, workers[0], workers[1:])

    arbiter.wait_log(r"web\[1\] was not started: spawn: the spawner was lost: it answered "
                     r"nothing for \d+ s .*; not a failed start")
    details = ctl.ok("status", name="web", details=True)["details"]["web"]
    assert details["state"] == "active" and details["reason"] is None, details
    assert details["deferred_spawns"] >= 1 and details["shortage"] is None, details
    arbiter.wait_log(r"web: all 2 processes run again after the loss of the spawner")
    assert arbiter.stop() == 0


def test_the_children_a_lost_spawner_never_answered_for_are_killed_not_left_running(
    circus: Circus, zmq_clients: Clients
) -> None:
    """A worker of a burst's first batch stops the spawner (SIGSTOP) while it clones the rest:
    children it cloned but never answered for are the arbiter's, of pids it never learned.
    Once the spawner is found out and replaced, they are killed: exactly the watcher's
    processes run, no unsupervised duplicate beside their replacements."""
    tmp = circus.tmp
    pid_file, marker = tmp / "spawner.pid", tmp / "stopped"
    # The first request goes alone, the next ones in batches (spawner.MAX_BATCH): wid 3
    # is the second of a batch, and a shell is quick to exec and stop its spawner.
    script = (f"[ $CIRCUS_WID = 3 ] && mkdir {marker} 2>/dev/null && read p < {pid_file} && "
              f"kill -STOP $p; "
              f"exec {CHILD_PYTHON} -S -E -c 'import time; time.sleep(1000)' burst")
    config = circus.write_config(f"""
        [watcher:burst]
        cmd = /bin/sh -c "{script}"
        numprocesses = 0
        """)
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(tmp))
    old = the_spawner(arbiter)
    pid_file.write_text(f"{old.pid}\n")
    wanted = 64

    ctl.ok("incr", name="burst", nb=wanted)

    arbiter.wait_log(rf"lost the spawner \(pid {old.pid}\): it answered nothing", timeout=15)
    wait_until(lambda: len(ctl.ok("list", name="burst")["pids"]) == wanted, 30,
               f"{wanted} processes listed", arbiter.log_tail)
    wait_count(arbiter, "burst", wanted, timeout=10)
    counted = stays_equal(lambda: sorted(real_pids(arbiter, "burst")), 1.0, "the processes")
    assert counted == sorted(ctl.ok("list", name="burst")["pids"]), "every one supervised"
    killed = arbiter.count(r"killing pid \d+ .*: cloned by the lost spawner")
    deferred = ctl.ok("status", name="burst", details=True)["details"]["burst"]
    print(f"\n{killed} clones of the lost spawner killed; "
          f"{deferred['deferred_spawns']} spawns deferred")
    assert killed >= 1, "the spawner was stopped with children cloned and not answered for"
    assert "Traceback" not in arbiter.log()
    started = time.monotonic()
    assert arbiter.stop() == 0
    assert time.monotonic() - started < 10
