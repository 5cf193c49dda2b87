"""Running short of the machine's resources, and asking for more processes than it can hold, on
a real arbiter: a shortage defers spawns and keeps what runs; a count past `max_processes` is
refused with the bound named; a start of thousands stops promptly on SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from arbiter_harness import CIRCUS_SD, Arbiter, Circus, alive, wait_until
from control_helpers import Clients, ControlClient, clients, control_endpoint, events_endpoint
from test_control_access import _as_user, needs_system_zmq, operators  # noqa: F401

from circus_sd.process_bound import PID_MAX_LIMIT, process_bound
from circus_sd.watcher import SPAWN_WINDOW

pytestmark = pytest.mark.timeout(90)

EX_CONFIG = 78
SLEEP = "sleep 100000"


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


def _details(ctl: ControlClient, name: str) -> dict[str, object]:
    details = ctl.ok("status", name=name, details=True)["details"][name]
    assert isinstance(details, dict)
    return details


def _listed(ctl: ControlClient, name: str) -> list[int]:
    return list(ctl.ok("list", name=name)["pids"])


def _set_nofile(pid: int, soft: int) -> None:
    """The running arbiter's soft RLIMIT_NOFILE, as `prlimit --nofile=SOFT:` sets it."""
    process = psutil.Process(pid)
    _soft, hard = process.rlimit(resource.RLIMIT_NOFILE)
    process.rlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- finding 4: a shortage of descriptors is waited out, not a failure ---------------------------


def test_running_short_of_descriptors_keeps_what_runs_and_starts_the_rest_later(
    circus: Circus, zmq_clients: Clients
) -> None:
    """With the default max_retry (5), spawns refused for lack of descriptors used to give the
    watcher up and stop every process it ran. Now: the running processes stay (same pids), the
    watcher is not given up, the shortfall is reported (status details, spawn_deferred events,
    one warning), and once RLIMIT_NOFILE is raised again the rest start."""
    config = circus.write_config(f"""
        [watcher:many]
        cmd = {SLEEP}
        numprocesses = 5
        backoff_max = 0.5
        """)
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    events = zmq_clients.events(events_endpoint(circus.tmp))
    events.sync(ctl, "many")
    wait_until(lambda: len(_listed(ctl, "many")) == 5, 5, "the first 5 processes")
    first = _listed(ctl, "many")

    _set_nofile(arbiter.pid, 256)
    ctl.ok("incr", name="many", nb=195)  # 200: more than 256 descriptors hold
    arbiter.wait_log(r"many\[\d+\] cannot start for lack of resources \(too many open files: ")
    deferred = [events.wait("watcher.many.spawn_deferred", timeout=5)]
    # Retried, with backoff, and never given up: a second hold comes and goes.
    deferred.append(events.wait(
        "watcher.many.spawn_deferred",
        lambda payload: payload["deferred"] > deferred[0]["deferred"], timeout=5,
    ))
    details = _details(ctl, "many")
    assert details["state"] in ("starting", "active"), details
    assert details["reason"] is None and details["shortage"], details
    assert isinstance(details["deferred_spawns"], int) and details["deferred_spawns"] > 0
    running = _listed(ctl, "many")
    assert set(first) <= set(running) and 5 < len(running) < 200
    assert all(alive(pid) for pid in first)
    assert arbiter.count(r"cannot start for lack of resources") == 1, "one warning per episode"
    assert "giving up" not in arbiter.log()

    _set_nofile(arbiter.pid, 4096)
    wait_until(lambda: len(_listed(ctl, "many")) == 200, 15,
               "the deferred processes to start once descriptors are there", arbiter.log_tail)
    details = _details(ctl, "many")
    assert (details["state"], details["shortage"]) == ("active", None), details
    assert set(first) <= set(_listed(ctl, "many"))
    arbiter.wait_log(r"many: all 200 processes run, the resource shortage is over")


def test_a_shortage_every_watcher_meets_is_one_warning_and_each_watchers_own_line(
    circus: Circus, zmq_clients: Clients
) -> None:
    """The descriptors are the arbiter's: three watchers running short of them at once make one
    WARNING (100 watchers of 100 made 70), and each of the others still says it, at INFO, with
    its own name."""
    config = circus.write_config(f"""
        [watcher:a]
        cmd = {SLEEP}
        backoff_max = 0.5

        [watcher:b]
        cmd = {SLEEP}
        backoff_max = 0.5

        [watcher:c]
        cmd = {SLEEP}
        backoff_max = 0.5
        """)
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    for name in "abc":
        wait_until(lambda name=name: len(_listed(ctl, name)) == 1, 5, f"{name}'s process")

    _set_nofile(arbiter.pid, 256)
    short = r"{} (\w+) {}\[\d+\] cannot start for lack of resources \(too many open files: "
    ctl.ok("incr", name="a", nb=199)  # more than 256 descriptors hold
    arbiter.wait_log(short.format(r"circus-sd\[\d+\]", "a"))
    for name in "bc":
        ctl.ok("incr", name=name, nb=20)
        arbiter.wait_log(short.format(r"circus-sd\[\d+\]", name))
    levels = dict(
        (watcher, level)
        for level, watcher in re.findall(
            r"circus-sd\[\d+\] (\w+) (\w+)\[\d+\] cannot start for lack of resources",
            arbiter.log(),
        )
    )
    assert levels == {"a": "WARNING", "b": "INFO", "c": "INFO"}, arbiter.log_tail()
    assert all(len(_listed(ctl, name)) >= 1 for name in "abc"), "what runs is kept"
    _set_nofile(arbiter.pid, 4096)
    assert arbiter.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to start processes as nobody")
def test_the_childs_exec_failing_for_its_own_limits_is_given_up_per_max_retry(
    circus: Circus, zmq_clients: Clients
) -> None:
    """EAGAIN, as the machine's shortages, but from the child's own exec: `nobody` is over the
    watcher's rlimit_nproc (a configuration that cannot work). A failed start, given up after
    max_retry as before, not a shortage retried forever."""
    config = circus.write_config(f"""
        [watcher:holder]
        cmd = {SLEEP}
        uid = nobody

        [watcher:limited]
        cmd = /bin/true
        uid = nobody
        rlimit_nproc = 0
        max_retry = 1
        backoff_initial = 0.1
        """)
    arbiter = circus.start(config)
    ctl = clients_control(zmq_clients, circus)
    arbiter.wait_log(r"limited\[1\] could not start: exec: Resource temporarily unavailable "
                     r"\(errno 11\); giving up after \d+ failures \(max_retry = 1\)", timeout=10)
    details = _details(ctl, "limited")
    assert details["state"] == "failed" and details["deferred_spawns"] == 0, details
    assert _details(ctl, "holder")["state"] == "active"
    assert arbiter.stop() == 0


def clients_control(zmq_clients: Clients, circus: Circus) -> ControlClient:
    return zmq_clients.control(control_endpoint(circus.tmp))


# -- finding 5: a bound on the number of processes -----------------------------------------------


def _rss(arbiter: Arbiter) -> int:
    return int(arbiter.process.memory_info().rss)


def test_incr_past_max_processes_is_refused_and_the_arbiter_keeps_answering(
    circus: Circus, zmq_clients: Clients
) -> None:
    """`incr w 1000000000` used to make the loop plan every worker: it stopped answering and
    grew by 100+ MB/s. Now the request is refused, naming the bound, and nothing changes."""
    config = circus.write_config(f"""
        [watcher:w]
        cmd = {SLEEP}
        """)
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    wait_until(lambda: len(_listed(ctl, "w")) == 1, 5, "w's process")
    bound = process_bound(None)  # the arbiter's default, from the same limits as ours
    rss = _rss(arbiter)

    for waiting in (False, True):
        reason = ctl.error("incr", 3, name="w", nb=1_000_000_000, waiting=waiting)
        assert reason == (
            "w: numprocesses 1000000001 would make 1000000001 processes in all, above "
            f"max_processes = {bound.limit} ({bound.source})"
        )
    # Past the bound but a plausible number (set, waited for): refused too.
    reason = ctl.error("set", 3, name="w", options={"numprocesses": bound.limit + 1},
                       waiting=True)
    assert reason.endswith(f"above {bound}")
    reason = ctl.error("add", 3, name="more", cmd=SLEEP, start=True, waiting=True,
                       options={"numprocesses": bound.limit})
    assert reason == (
        f"more: numprocesses {bound.limit} would make {bound.limit + 1} processes in all, "
        f"above {bound}"
    )
    assert ctl.ok("list")["watchers"] == ["w"]
    reason = ctl.error("set", 3, name="w", options={"numprocesses": 10**20})
    assert f"numprocesses: expected an integer <= {PID_MAX_LIMIT}" in reason

    started = time.monotonic()
    assert ctl.ok("status", name="w")["status"] == "active"
    assert time.monotonic() - started < 1.0
    assert ctl.ok("get", name="w", keys=["numprocesses"])["options"]["numprocesses"] == 1
    assert len(_listed(ctl, "w")) == 1
    assert _rss(arbiter) - rss < 8 << 20, "the arbiter's memory grew"
    # Fewer is always allowed, more within the bound too.
    ctl.ok("incr", name="w", nb=2, waiting=True)
    assert len(_listed(ctl, "w")) == 3


@needs_system_zmq
def test_a_group_member_cannot_ask_for_a_billion_processes(
    circus: Circus, operators: tuple[str, str], zmq_clients: Clients  # noqa: F811
) -> None:
    user, group = operators
    world = circus.world_dir()
    run = world / "run"
    config = circus.tmp / "circus.ini"
    config.write_text(
        f"[circus]\nendpoint = ipc://{run}/control.sock\npubsub_endpoint = ipc://{run}/e.sock\n"
        f"endpoint_group = {group}\nmax_processes = 50\n\n[watcher:w]\ncmd = {SLEEP}\n"
    )
    arbiter = circus.start(config)
    rss = _rss(arbiter)
    member = [f"--reuid={user}", "--regid=nogroup", "--init-groups"]
    out = _as_user(
        circus, world, member,
        {"command": "incr", "properties": {"name": "w", "nb": 1_000_000_000}},
        {"command": "status", "properties": {"name": "w"}},
    )
    refused, status = out["replies"]
    assert refused["status"] == "error", refused
    assert refused["reason"] == (
        "w: numprocesses 1000000001 would make 1000000001 processes in all, above "
        "max_processes = 50 ([circus] max_processes)"
    )
    assert status["status"] == "active", status
    ctl = zmq_clients.control(f"ipc://{run}/control.sock")
    assert len(_listed(ctl, "w")) == 1
    assert _rss(arbiter) - rss < 8 << 20


def test_check_refuses_absurd_and_unbearable_numprocesses_with_file_and_line(
    circus: Circus,
) -> None:
    """`numprocesses = 99999999999999999999` used to pass --check."""
    bound = process_bound(None)
    for value, message in (
        ("99999999999999999999", f"expected an integer <= {PID_MAX_LIMIT}, got "),
        (str(bound.limit + 1), f"{bound.limit + 1} is above {bound}"),
    ):
        path = circus.write_config(f"[watcher:w]\ncmd = {SLEEP}\nnumprocesses = {value}\n")
        line = path.read_text().splitlines().index(f"numprocesses = {value}") + 1
        result = circus.run("--check", str(path))
        assert result.returncode == EX_CONFIG, result
        assert f"{path}:{line}: [watcher:w] numprocesses: {message}" in result.stderr


def _children(pid: int) -> int:
    """How many children `pid` has, from the kernel's own lists (psutil's scan of every process
    takes long enough, among thousands, for the count to be stale)."""
    count = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            count += len((task / "children").read_text().split())
    return count


def _start_unwaited(circus: Circus, config: Path) -> Arbiter:
    """`circus-sd CONFIG`, not waiting for it to say it runs (its start is what is tested)."""
    log_path = circus.tmp / "arbiter.log"
    with open(log_path, "wb") as log, open(os.devnull, "rb") as stdin:
        popen = subprocess.Popen(
            [str(CIRCUS_SD), str(config)], stdin=stdin, stdout=log, stderr=log, cwd=circus.tmp
        )
    arbiter = Arbiter(popen, log_path)
    circus.arbiters.append(arbiter)
    return arbiter


def test_sigterm_during_a_start_of_thousands_stops_promptly_leaving_nothing(
    circus: Circus, zmq_clients: Clients, capsys: pytest.CaptureFixture[str]
) -> None:
    """A start of 2000 processes goes in steps: the loop answers all along, and SIGTERM in the
    middle stops it at once (the old arbiter finished the start first, spawning every process
    before stopping them)."""
    count = 2000
    config = circus.write_config(f"""
        [circus]
        loglevel = debug

        [watcher:many]
        cmd = {SLEEP}
        numprocesses = {count}
        """)
    arbiter = _start_unwaited(circus, config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    spawned = r"many\[\d+\] pid \d+ spawned"
    wait_until(lambda: arbiter.count(spawned) >= 300, 30, "300 processes", arbiter.log_tail)
    started = time.monotonic()
    assert ctl.ok("status", name="many", timeout=2)["status"] == "starting"
    assert time.monotonic() - started < 2

    at_sigterm = _children(arbiter.pid)  # the spawner and every clone, exec'd or not yet
    arbiter.send(signal.SIGTERM)
    assert arbiter.wait_exit(15) == 0
    stop_seconds = time.monotonic() - started
    total = arbiter.count(spawned)
    # What was asked of the spawner when the stop came (and in the loop turn that was going on
    # then) still runs its course, nothing more.
    assert total <= at_sigterm + 2 * SPAWN_WINDOW, (total, at_sigterm)
    with capsys.disabled():
        print(f"\nSIGTERM at {at_sigterm} of {count} processes: {total} spawned in all, "
              f"exit {stop_seconds:.2f} s after the status request")
    assert total < count
    assert stop_seconds < 10
    assert not circus.leftovers(), "processes left behind"
    log = arbiter.log()
    assert not re.search(r" (ERROR|CRITICAL) |circus_sd/", log), arbiter.log_tail(60)
