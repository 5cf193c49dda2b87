"""Faults the arbiter must survive, on real processes: children that exit every way there is or
misbehave with their output, crash loops fast and slow, file descriptors and process slots
running out, and broken configuration files (at start-up and on reloadconfig).

Each test names what is measured against what bound; the arbiter must keep serving and leave
nothing behind (the `circus` fixture checks the latter).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import shlex
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from arbiter_harness import (
    CHILD_PYTHON,
    CHILDREN,
    ROOT,
    Arbiter,
    Circus,
    alive,
    child_command,
    report_command,
    stays_equal,
    wait_until,
)
from children.faulty import junk
from control_helpers import (
    Clients,
    ControlClient,
    EventStream,
    clients,
    control_endpoint,
    events_endpoint,
    real_pids,
    wait_count,
)

from circus_sd.config.env_file import env_file_paths
from circus_sd.config.model import ArbiterConfig, SocketConfig, WatcherConfig
from circus_sd.config.options import (
    RLIMITS,
    OptionValueError,
    group_id,
    name_list,
    optional_text,
    options_of,
    rlimit_pair,
    text,
    user_id,
)
from circus_sd.config.streams import STREAM_OPTIONS, file_path
from circus_sd.fd_reserve import RESERVE

pytestmark = pytest.mark.timeout(90)

EX_CONFIG = 78


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


def _subscribed(
    circus: Circus, zmq_clients: Clients, anchor: str = "anchor"
) -> tuple[ControlClient, EventStream]:
    """A control client and an event stream known to be live (synced on watcher `anchor`)."""
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    events = zmq_clients.events(events_endpoint(circus.tmp))
    events.sync(ctl, anchor)
    return ctl, events


def _anchor(circus: Circus) -> str:
    return f"[watcher:anchor]\ncmd = {report_command(circus.tmp, 'anchor')}\n\n"


def _collect(
    events: EventStream, done: Callable[[], bool], timeout: float, what: str
) -> None:
    """Take in events until `done()`; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        events.drain(0.05)


def _of(events: EventStream, topic: str) -> list[dict[str, Any]]:
    return [payload for got, payload in events.seen if got == topic]


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


# -- children that exit every way there is -------------------------------------------------------

# Signals whose default action does not end a process (ignore, stop, continue).
_NOT_TERMINATING = {
    signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH,
    signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU,
}
TERMINATING_SIGNALS = sorted(int(s) for s in signal.valid_signals() if s not in _NOT_TERMINATING)


def _described(exit_code: int) -> str:
    """How the arbiter's log describes an exit (its own wording, recomputed here)."""
    if exit_code >= 0:
        return f"exited with status {exit_code}"
    try:
        return f"killed by {signal.Signals(-exit_code).name}"
    except ValueError:
        return f"killed by signal {-exit_code}"


def test_every_exit_status_and_terminating_signal_is_reported(
    circus: Circus, zmq_clients: Clients
) -> None:
    """Worker w of 256 + len(signals) exits with status w - 1 (0..255, every one), or kills
    itself with the next terminating signal (standard and real-time); each exit's reap event
    and log line must say exactly that."""
    expected = {wid: wid - 1 for wid in range(1, 257)}
    expected.update({257 + i: -signum for i, signum in enumerate(TERMINATING_SIGNALS)})
    script = CHILDREN / "exits.sh"
    signums = " ".join(str(s) for s in TERMINATING_SIGNALS)
    config = circus.write_config(_anchor(circus) + textwrap.dedent(f"""
        [watcher:exits]
        cmd = /bin/sh {script} {circus.tmp} $(circus.wid) {signums}
        numprocesses = {len(expected)}
        autostart = false
        respawn = false
        min_uptime = 0
        check_flapping = false
        close_child_stdout = true
        close_child_stderr = true
        rlimit_core = 0
        """))
    arbiter = circus.start(config)
    ctl, events = _subscribed(circus, zmq_clients)

    ctl.ok("start", name="exits")
    _collect(events, lambda: len(_of(events, "watcher.exits.reap")) >= len(expected), 60,
             f"{len(expected)} reap events")

    pattern = re.compile(
        r"exits\[(\d+)\] pid (\d+) (exited with status \d+|killed by (?:SIG\w+|signal \d+)) "
    )
    logged = {int(m[1]): (int(m[2]), m[3]) for m in pattern.finditer(arbiter.log())}
    reaps = {p["process_pid"]: p["exit_code"] for p in _of(events, "watcher.exits.reap")}
    spawns = [p["process_pid"] for p in _of(events, "watcher.exits.spawn")]
    assert sorted(logged) == sorted(expected), "a log line for every worker"
    wrong = []
    for wid, code in expected.items():
        pid, described = logged[wid]
        if described != _described(code) or reaps.get(pid) != code:
            wrong.append(f"exits[{wid}] pid {pid}: expected {code} ({_described(code)}), "
                         f"logged {described!r}, reap event {reaps.get(pid)}")
    assert not wrong, "\n".join(wrong[:20])
    assert sorted(spawns) == sorted(reaps) and len(reaps) == len(expected)
    assert ctl.ok("status", name="anchor")["status"] == "active"
    assert real_pids(arbiter, "exits") == []
    assert "Traceback" not in arbiter.log()


# -- children that misbehave with their output ---------------------------------------------------

JUNK_BYTES = 65536


def _faulty(circus: Circus, name: str, mode: str, *args: str) -> str:
    return child_command("faulty.py", circus.tmp, name, mode, *args)


def _done_pid(circus: Circus, name: str, wid: int, not_pid: int | None = None) -> int:
    path = circus.tmp / f"{name}.{wid}.done"

    def fresh() -> int | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid = int(path.read_text())
            return pid if pid != not_pid else None
        return None

    return wait_until(fresh, 10, f"{name}[{wid}] to be done", circus.log_tails)


def _bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def test_children_that_close_stdout_write_no_newline_or_binary_junk(
    circus: Circus, zmq_clients: Clients
) -> None:
    tmp = circus.tmp
    config = circus.write_config(f"""
        [watcher:closer]
        cmd = {_faulty(circus, "closer", "close-stdout")}
        stdout_stream.filename = {tmp}/closer.out
        stderr_stream.filename = {tmp}/closer.err

        [watcher:partial]
        cmd = {_faulty(circus, "partial", "no-newline")}
        stdout_stream.filename = {tmp}/partial.out
        graceful_timeout = 5

        [watcher:junk]
        cmd = {_faulty(circus, "junk", "junk", str(JUNK_BYTES))}
        numprocesses = 2
        stdout_stream.filename = {tmp}/junk.$(circus.wid).out
        """)
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(tmp))
    closer = _done_pid(circus, "closer", 1)
    partial = _done_pid(circus, "partial", 1)
    junk_pids = {wid: _done_pid(circus, "junk", wid) for wid in (1, 2)}

    # Its stdout and stderr ended while it runs: what it wrote arrived, and it is still watched.
    wait_until(lambda: _bytes(tmp / "closer.out") == b"before the close\n"
               and _bytes(tmp / "closer.err") == b"stdout is closed\n",
               5, "closer's two lines", arbiter.log_tail)
    stays_equal(lambda: alive(closer), 0.5, "closer is alive")
    assert ctl.ok("list", name="closer")["pids"] == [closer]
    os.kill(closer, signal.SIGKILL)
    replacement = _done_pid(circus, "closer", 1, not_pid=closer)
    assert ctl.ok("list", name="closer")["pids"] == [replacement]

    # Binary junk (NUL, CR, invalid UTF-8) arrives byte for byte; the unfinished last line
    # gets its newline when the process's output ends (not before: it is still unfinished).
    def expected_junk(wid: int, copies: int) -> bytes:
        data = junk(JUNK_BYTES, wid)
        whole = data.rpartition(b"\n")[0] + b"\n"
        return (data + (b"" if data.endswith(b"\n") else b"\n")) * (copies - 1) + whole

    for wid in (1, 2):
        out = tmp / f"junk.{wid}.out"
        wait_until(lambda out=out, wid=wid: _bytes(out) == expected_junk(wid, 1), 10,
                   f"junk[{wid}]'s whole lines", lambda out=out: f"{len(_bytes(out))} bytes")
    os.kill(junk_pids[1], signal.SIGKILL)
    _done_pid(circus, "junk", 1, not_pid=junk_pids[1])
    wait_until(lambda: _bytes(tmp / "junk.1.out") == expected_junk(1, 2), 10,
               "the killed process's last line, then its replacement's junk", arbiter.log_tail)

    # A line never ended: held back, then written whole with the tail the process adds at exit.
    assert _bytes(tmp / "partial.out") == b""
    ctl.ok("stop", name="partial", waiting=True)
    assert not alive(partial)
    whole = b"no newline here, nor here, and a tail at exit\n"
    wait_until(lambda: _bytes(tmp / "partial.out") == whole, 5, "the line completed at exit",
               lambda: repr(_bytes(tmp / "partial.out")))

    assert arbiter.running()
    assert ctl.ok("status")["statuses"] == {
        "closer": "active", "junk": "active", "partial": "stopped",
    }
    assert "Traceback" not in arbiter.log()


# -- crash loops ---------------------------------------------------------------------------------

WINDOW = 5.0
BACKOFF_INITIAL, BACKOFF_MAX, JITTER = 0.1, 0.8, 0.1
SLOW_RUN = 1.3  # seconds a slow crasher runs: longer than min_uptime (1 s)


def _backoff(failures: int) -> float:
    """README: backoff_initial * 2**(k-1), capped at backoff_max (before the ±10 % jitter)."""
    return float(min(BACKOFF_INITIAL * 2 ** (failures - 1), BACKOFF_MAX))


def _spawns_within(window: float, gap: Callable[[int], float]) -> int:
    """How many spawns fit in `window` seconds if the k-th restart waits gap(k)."""
    spawns, elapsed = 1, 0.0
    while elapsed + gap(spawns) <= window:
        elapsed += gap(spawns)
        spawns += 1
    return spawns


def test_fast_and_slow_crash_loops_back_off_as_computed_and_never_spin(
    circus: Circus, zmq_clients: Clients, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fast: exits at once, every restart is a failed start; the restarts follow the backoff
    arithmetic, so the number of spawns in the window is bounded both ways. Slow: runs longer
    than min_uptime, so each restart is immediate, with no backoff and no flapping."""
    tmp = circus.tmp
    slow_script = f"import sys, time; time.sleep({SLOW_RUN}); sys.exit(3)"
    config = circus.write_config(_anchor(circus) + textwrap.dedent(f"""
        [watcher:fast]
        cmd = /bin/sh -c 'exit 1' fast-crasher {tmp}
        autostart = false
        backoff_initial = {BACKOFF_INITIAL}
        backoff_max = {BACKOFF_MAX}
        check_flapping = false

        [watcher:slow]
        cmd = {CHILD_PYTHON} -S -E -c {shlex.quote(slow_script)} {tmp}
        autostart = false
        """))
    arbiter = circus.start(config)
    ctl, events = _subscribed(circus, zmq_clients)

    cpu_before = _cpu_seconds(arbiter.process)
    ctl.ok("start", name="fast")
    ctl.ok("start", name="slow")
    started = time.monotonic()
    # The window is the measurement itself: take in events until it is over.
    _collect(events, lambda: time.monotonic() - started >= WINDOW, WINDOW + 1, "the window")
    cpu = _cpu_seconds(arbiter.process) - cpu_before
    ctl.ok("stop", name="fast", waiting=True)
    ctl.ok("stop", name="slow", waiting=True)
    events.drain(0.2)

    def timeline(name: str) -> tuple[list[float], list[float], list[dict[str, Any]]]:
        spawns = [p["time"] for p in _of(events, f"watcher.{name}.spawn")]
        reaps = [p["time"] for p in _of(events, f"watcher.{name}.reap")]
        return spawns, reaps, _of(events, f"watcher.{name}.backoff")

    # Fast: each backoff event carries the arithmetic, and the next spawn waited for it.
    spawns, reaps, backoffs = timeline("fast")
    assert [b["failures"] for b in backoffs] == list(range(1, len(backoffs) + 1))
    for event in backoffs:
        nominal = _backoff(event["failures"])
        assert (1 - JITTER) * nominal - 0.001 <= event["delay"] <= (1 + JITTER) * nominal + 0.001
    for index, event in enumerate(backoffs[: len(spawns) - 1]):
        waited = spawns[index + 1] - reaps[index]
        assert waited >= event["delay"] - 0.01, f"restart {index + 1} came after {waited:.3f} s"
    in_window = [t for t in spawns if t - spawns[0] <= WINDOW]
    most = _spawns_within(WINDOW, lambda k: (1 - JITTER) * _backoff(k))
    # A slow machine adds up to 0.25 s per cycle (spawn, exec, exit, reap).
    fewest = _spawns_within(WINDOW, lambda k: (1 + JITTER) * _backoff(k) + 0.25)
    assert fewest <= len(in_window) <= most, (
        f"fast: {len(in_window)} spawns in {WINDOW:g} s; the backoff allows {fewest}..{most}"
    )
    fast_figures = f"fast: {len(in_window)} spawns in {WINDOW:g} s (allowed {fewest}..{most})"
    codes = [p["exit_code"] for p in _of(events, "watcher.fast.reap")]
    assert set(codes[:-1]) == {1} and codes[-1] in (1, -signal.SIGTERM), codes  # the stop

    # Slow: immediate restarts, never a backoff or a flapping pause.
    spawns, reaps, backoffs = timeline("slow")
    assert backoffs == [] and _of(events, "watcher.slow.flapping") == []
    for index in range(len(spawns) - 1):
        assert spawns[index + 1] - reaps[index] < 0.25, "a slow crasher is restarted at once"
    in_window = [t for t in spawns if t - spawns[0] <= WINDOW]
    most = _spawns_within(WINDOW, lambda k: SLOW_RUN)
    fewest = _spawns_within(WINDOW, lambda k: SLOW_RUN + 0.5)
    assert fewest <= len(in_window) <= most, f"slow: {len(in_window)} spawns in {WINDOW:g} s"
    slow_figures = f"slow: {len(in_window)} spawns (allowed {fewest}..{most}), no backoff"
    codes = [p["exit_code"] for p in _of(events, "watcher.slow.reap")]
    assert set(codes[:-1]) == {3} and codes[-1] in (3, -signal.SIGTERM), codes  # the stop
    restarts = r"slow\[1\] pid \d+ exited with status 3 after 1\.\d s; restarting\n"
    assert arbiter.count(restarts) == codes.count(3)

    # No spin: a crash loop costs the arbiter little (about 10 ms per spawn here).
    with capsys.disabled():
        print(f"\ncrash loops: {fast_figures}; {slow_figures}; arbiter CPU "
              f"{100 * cpu / WINDOW:.1f} % of a core")
    assert cpu < 0.1 * WINDOW, f"the arbiter used {cpu:.2f} s of CPU in {WINDOW:g} s"
    assert "Traceback" not in arbiter.log()


# -- running out of file descriptors and of processes --------------------------------------------

# The idle arbiter holds about 40 descriptors (ZMQ sockets, their monitors, the log writer).
NOFILE = 96


def test_running_out_of_file_descriptors_is_a_clear_error_not_a_crash(
    circus: Circus, zmq_clients: Clients
) -> None:
    """Started with RLIMIT_NOFILE 96 (hard), asked for more processes than that allows: the
    extra spawns are deferred with a clear message and back off, while the arbiter keeps serving, on
    old and new connections (libzmq aborts the process if accept() gets EMFILE, so a reserve
    of descriptors must stay free), and the processes it has stay supervised."""
    tmp = circus.tmp
    config = circus.write_config(f"""
        [watcher:steady]
        cmd = {report_command(tmp, "steady")}

        [watcher:many]
        cmd = {report_command(tmp, "many")}
        max_retry = -1
        backoff_max = 0.5
        """)
    arbiter = circus.start(config, nofile=(NOFILE, NOFILE))
    ctl = zmq_clients.control(control_endpoint(tmp))
    wait_count(arbiter, "many", 1)
    reserve = min(RESERVE, NOFILE // 4)

    ctl.ok("incr", name="many", nb=30)
    arbiter.wait_log(
        rf"many\[\d+\] cannot start for lack of resources \(too many open files: \d+ of "
        rf"RLIMIT_NOFILE {NOFILE} in use \({reserve} kept free for the control socket\)\)",
        timeout=10,
    )
    cpu_before = _cpu_seconds(arbiter.process)
    # Served while spawns keep failing: the old connection, and new ones (fewer than the reserve).
    for _ in range(5):
        assert ctl.ok("status", name="many")["status"] == "active"
        fresh = zmq_clients.control(control_endpoint(tmp))
        target = fresh.ok("get", name="many", keys=["numprocesses"])["options"]["numprocesses"]
        assert target == 31
        fresh.close()
    open_fds = len(os.listdir(f"/proc/{arbiter.pid}/fd"))
    assert open_fds <= NOFILE - reserve // 2, f"{open_fds} descriptors open: the reserve is gone"

    # Everything that runs is known, and known processes are still supervised.
    def agreed() -> list[int] | None:
        listed = ctl.ok("list", name="many")["pids"]
        return listed if listed == real_pids(arbiter, "many") else None

    running = wait_until(agreed, 5, "the listed and the real processes to agree")
    assert 1 < len(running) < 31
    os.kill(running[0], signal.SIGKILL)
    wait_until(lambda: running[0] not in ctl.ok("list", name="many")["pids"], 5,
               "the killed process to be noticed")
    cpu = _cpu_seconds(arbiter.process) - cpu_before
    assert cpu < 1.0, f"{cpu:.2f} s of CPU while spawns failed: a spin"

    # Asked for fewer again: all of them run, nothing is failing.
    ctl.ok("decr", name="many", nb=28, waiting=True)
    wait_count(arbiter, "many", 3, timeout=10)
    assert ctl.ok("status")["statuses"] == {"many": "active", "steady": "active"}
    assert arbiter.running()
    assert "Traceback" not in arbiter.log()


def _pids_hierarchy() -> Path | None:
    """A cgroup hierarchy with the pids controller we may make a child cgroup in."""
    v1 = Path("/sys/fs/cgroup/pids")
    if (v1 / "cgroup.procs").exists() and os.access(v1, os.W_OK):
        return v1
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        with contextlib.suppress(OSError):
            if "pids" in (root / "cgroup.subtree_control").read_text().split():
                return root if os.access(root, os.W_OK) else None
    return None


@pytest.fixture
def pids_cgroup() -> Iterator[Path]:
    """A fresh cgroup with the pids controller; emptied (into its parent) and removed after."""
    hierarchy = _pids_hierarchy()
    if hierarchy is None:
        pytest.skip("needs root and a cgroup hierarchy with the pids controller")
    path = hierarchy / f"circus-sd-it-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir()
    try:
        yield path
    finally:
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (hierarchy / "cgroup.procs").write_text(pid)
        path.rmdir()


def _spawner_of(arbiter: Arbiter) -> psutil.Process:
    own = arbiter.process.cmdline()
    return next(p for p in arbiter.process.children() if p.cmdline() == own)


def test_fork_failing_with_eagain_backs_off_without_spinning(
    circus: Circus, zmq_clients: Clients, pids_cgroup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The spawner is moved into a cgroup whose pids.max leaves no room: its clone() fails with
    EAGAIN. The deferred spawns back off (attempts bounded by the arithmetic, counted apart and
    logged once), the arbiter's CPU stays near zero, and once room is made every process
    starts."""
    tmp = circus.tmp
    config = circus.write_config(f"""
        [watcher:steady]
        cmd = {report_command(tmp, "steady")}

        [watcher:forks]
        cmd = {report_command(tmp, "forks")}
        numprocesses = 2
        max_retry = -1
        backoff_initial = 0.1
        backoff_max = 0.5
        """)
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(tmp))
    wait_count(arbiter, "forks", 2)
    (pids_cgroup / "cgroup.procs").write_text(str(_spawner_of(arbiter).pid))
    (pids_cgroup / "pids.max").write_text("1")  # the spawner itself: no room for a child

    window = 3.0
    ctl.ok("incr", name="forks", nb=3)
    failed = (r"forks\[\d\] cannot start for lack of resources "
              r"\(spawn: Resource temporarily unavailable\)")
    arbiter.wait_log(failed)

    def deferred() -> int:
        details = ctl.ok("status", name="forks", details=True)["details"]["forks"]
        return int(details["deferred_spawns"])

    before, cpu_before = deferred(), _cpu_seconds(arbiter.process)
    stays_equal(lambda: len(real_pids(arbiter, "forks")), window, "the number of forks")
    attempts = deferred() - before
    cpu = _cpu_seconds(arbiter.process) - cpu_before
    # 3 workers, each retrying after at least 0.9 * backoff_max once past the first doublings.
    most = 3 * (window / (0.9 * 0.5) + 4)
    with capsys.disabled():
        print(f"\nEAGAIN: {attempts} failed spawns in {window:g} s (at most {most:g}), "
              f"arbiter CPU {100 * cpu / window:.1f} % of a core")
    assert 3 <= attempts <= most, f"{attempts} failed spawns in {window:g} s (at most {most:g})"
    assert cpu < 0.1 * window, f"the arbiter used {cpu:.2f} s of CPU in {window:g} s"
    assert ctl.ok("status", name="forks")["status"] == "active"

    assert arbiter.count(failed) == 1, "one warning for the whole shortage"

    (pids_cgroup / "pids.max").write_text("max")
    wait_count(arbiter, "forks", 5, timeout=5)
    details = ctl.ok("status", name="forks", details=True)["details"]["forks"]
    assert (details["state"], details["reason"], len(details["pids"])) == ("active", None, 5)
    assert details["shortage"] is None
    assert "Traceback" not in arbiter.log()


# -- broken configuration files ------------------------------------------------------------------

# Tried in order as a wrong value for each option: the first its own parser rejects is used.
WRONG_VALUES = ("not-a-value", "-5", "1.5", "99999999", "", "(unclosed", "ipc://@abstract")
FREE_TEXT = {text, optional_text, name_list, file_path, env_file_paths}
# A user or group name this machine has no account for is a condition of the machine (that
# watcher fails until it has one), not a mistake in the file: these take a wrong number.
MACHINE_NAMES = {user_id, group_id}


def _wrong_value(parse: Callable[[str], Any]) -> str | None:
    candidates = ("-5",) if parse in MACHINE_NAMES else WRONG_VALUES
    for candidate in candidates:
        try:
            parse(candidate)
        except OptionValueError:
            return candidate
    return None


def _every_option() -> list[tuple[str, str, Any]]:
    """(section, key, parser) for every declared option, rlimit_* included."""
    found: list[tuple[str, str, Any]] = []
    for section, cls in (("circus", ArbiterConfig), ("watcher:w", WatcherConfig),
                         ("socket:s", SocketConfig)):
        found += [(section, key, declared.parse) for key, (_f, declared) in
                  options_of(cls).items()]
    found += [("watcher:w", f"stdout_stream.{key}", declared.parse)
              for key, (_f, declared) in STREAM_OPTIONS.items()]
    found += [("watcher:w", key, rlimit_pair) for key in RLIMITS]
    return found


def _bad_config(circus: Circus, section: str, key: str, value: str) -> tuple[Path, int]:
    """A config whose only mistake is `key = value` in `section`; (path, its line)."""
    directory = circus.tmp / f"{section.replace(':', '-')}-{key}"
    directory.mkdir()
    bad = f"{key} = {value}"
    watcher = f"[watcher:w]\ncmd = {report_command(circus.tmp, 'w')}\n"
    if key.startswith("stdout_stream."):
        if key != "stdout_stream.class":
            watcher += "stdout_stream.class = FileStream\n"
        watcher += f"stdout_stream.filename = {directory}/out.log\n"
    # The endpoints in the test's directory, unless the bad value is one of them (a key given
    # twice keeps its first value, as in Circus).
    endpoints = {"endpoint": f"ipc://{directory}/c.sock",
                 "pubsub_endpoint": f"ipc://{directory}/e.sock"}
    arbiter = "[circus]\n" + "".join(
        f"{name} = {value}\n" for name, value in endpoints.items()
        if not (section == "circus" and name == key)
    )
    if section == "circus":
        arbiter += bad + "\n"
    elif section == "watcher:w":
        watcher += bad + "\n"
    text_ = arbiter + "\n" + watcher + ("\n[socket:s]\n" + bad + "\n" if section == "socket:s"
                                        else "")
    path = directory / "circus.ini"
    path.write_text(text_)
    return path, text_.splitlines().index(bad) + 1


def test_every_option_given_a_wrong_value_exits_78_naming_file_line_and_option(
    circus: Circus, capsys: pytest.CaptureFixture[str]
) -> None:
    """The list comes from the option declarations: each option gets a value its own parser
    rejects; options that take any text (cmd, paths, names) have no wrong value and are only
    counted. Each bad file must make `circus-sd` exit 78, name file:line, section and option,
    and start nothing."""
    checked: list[tuple[str, str, str]] = []
    free: list[str] = []
    for section, key, parse in _every_option():
        value = _wrong_value(parse)
        if value is None:
            assert parse in FREE_TEXT, f"[{section}] {key}: no wrong value found for its parser"
            free.append(key)
        else:
            checked.append((section, key, value))

    def run(case: tuple[str, str, str]) -> str | None:
        section, key, value = case
        path, line = _bad_config(circus, section, key, value)
        result = circus.run(str(path), timeout=20)
        where = f"{path}:{line}: [{section}] {key}: "
        if result.returncode != EX_CONFIG or where not in result.stderr:
            return f"[{section}] {key} = {value!r}: exit {result.returncode}, {result.stderr!r}"
        return None

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        problems = [p for p in pool.map(run, checked) if p]
    assert not problems, "\n".join(problems)
    assert len(checked) >= 70, f"only {len(checked)} options checked"
    assert circus.reports.wids("w") == [], "a bad config started a process"
    with capsys.disabled():
        print(f"\nconfig options: {len(checked)} wrong values refused with file:line, "
              f"{len(free)} options take any text")


def test_an_include_loop_exits_78_showing_the_chain(circus: Circus) -> None:
    (circus.tmp / "conf.d").mkdir()
    first, second = circus.tmp / "conf.d" / "a.ini", circus.tmp / "conf.d" / "b.ini"
    first.write_text("[circus]\ninclude = b.ini\n")
    second.write_text(f"[watcher:w]\ncmd = {report_command(circus.tmp, 'w')}\n\n"
                      "[circus]\ninclude = a.ini\n")
    main = circus.write_config("[circus]\ninclude = conf.d/a.ini\n")

    result = circus.run(str(main))

    assert result.returncode == EX_CONFIG, result.stderr
    chain = f"{main} -> {circus.tmp}/conf.d/a.ini -> {circus.tmp}/conf.d/b.ini -> "
    assert f"{second}:5: [circus] include: include loop: {chain}" in result.stderr, result.stderr
    # A file that includes itself by name.
    itself = circus.write_config("[circus]\ninclude = self.ini\n", name="self.ini")
    result = circus.run(str(itself))
    assert result.returncode == EX_CONFIG
    assert f"include loop: {itself} -> {itself}" in result.stderr, result.stderr
    assert circus.reports.wids("w") == []


@pytest.mark.parametrize("kind", ["directory", "not utf-8", "binary"])
def test_an_unreadable_config_file_exits_78_naming_it(circus: Circus, kind: str) -> None:
    path = circus.tmp / "circus.ini"
    if kind == "directory":
        path.mkdir()
        expected = f"{path}: cannot read: Is a directory"
    elif kind == "not utf-8":
        path.write_bytes(b"[watcher:w]\ncmd = /bin/true \xff\xfe\n")
        expected = f"{path}:2: not valid UTF-8 text"
    else:
        path.write_bytes(bytes(range(1, 9)) * 10 + b"\n")
        expected = f"{path}:1: "

    result = circus.run(str(path))

    assert result.returncode == EX_CONFIG, result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


HUGE = 5000


def test_a_file_of_5000_watchers_loads_in_bounded_time(
    circus: Circus, zmq_clients: Clients
) -> None:
    sections = "".join(
        f"[watcher:w{i}]\ncmd = {report_command(circus.tmp, f'w{i}')}\nautostart = false\n\n"
        for i in range(HUGE)
    )
    config = circus.write_config(sections)

    started = time.monotonic()
    result = circus.run("--check", str(config), timeout=30)
    checked_in = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{config}: OK, {HUGE} watcher(s)"
    # 1.0 s here; it used to take 3.8 s (a quadratic name check), 60 s for 20,000 watchers.
    assert checked_in < 10, f"--check took {checked_in:.1f} s"

    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    assert len(ctl.ok("list", timeout=10)["watchers"]) == HUGE
    assert set(ctl.ok("status", timeout=10)["statuses"].values()) == {"stopped"}
    ctl.ok("start", name="w4999", waiting=True)
    circus.reports.wait("w4999", 1)
    assert arbiter.running()


def test_reloadconfig_with_a_broken_file_keeps_the_running_config(
    circus: Circus, zmq_clients: Clients
) -> None:
    tmp = circus.tmp
    good = (f"[watcher:web]\ncmd = {report_command(tmp, 'web')}\nnumprocesses = 2\n\n"
            f"[watcher:db]\ncmd = {report_command(tmp, 'db')}\n")
    config = circus.write_config(good)
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(tmp))
    running = {name: wait_count(arbiter, name, n) for name, n in (("web", 2), ("db", 1))}
    (tmp / "loop.ini").write_text("[circus]\ninclude = circus.ini\n")

    breakages: dict[str, tuple[Callable[[], None], str]] = {
        "an include loop": (
            lambda: circus.write_config(good + "\n[circus]\ninclude = loop.ini\n"),
            f"include loop: {config} -> {tmp}/loop.ini -> {config}",
        ),
        "a syntax error": (
            lambda: circus.write_config(good + "\nthis line means nothing\n"),
            f"{config}:",
        ),
        "a wrong type": (
            lambda: circus.write_config(good + "graceful_timeout = soon\n"),
            "[watcher:db] graceful_timeout: ",
        ),
        "invalid UTF-8": (lambda: config.write_bytes(b"[watcher:web]\ncmd = \xff\n"),
                          "not valid UTF-8"),
        "a deleted file": (config.unlink, f"{config}: configuration file not found"),
    }
    for what, (breakage, expected) in breakages.items():
        breakage()
        reason = ctl.error("reloadconfig", 3, waiting=True, timeout=10)
        assert expected in reason, f"{what}: {reason}"
        assert ctl.ok("list")["watchers"] == ["db", "web"], what
        for name, pids in running.items():
            assert real_pids(arbiter, name) == pids, f"{what}: {name}'s processes changed"
        assert ctl.ok("status")["statuses"] == {"db": "active", "web": "active"}, what

    circus.write_config(good.replace("numprocesses = 2", "numprocesses = 3"))
    ctl.ok("reloadconfig", waiting=True, timeout=10)
    assert set(running["web"]) < set(wait_count(arbiter, "web", 3))
    assert real_pids(arbiter, "db") == running["db"]
    assert arbiter.running()



def test_set_of_any_value_for_every_option_gets_a_reply_never_an_internal_error(
    circus: Circus, zmq_clients: Clients, capsys: pytest.CaptureFixture[str]
) -> None:
    """`set` parses with the same declarations as the file: every watcher option, rlimits,
    stream options, hooks and env, each given the config fuzzer's tricky values (NUL, lone
    surrogates, `inf`, `²`, 4,300+ digits...) and JSON values of other types. Each gets a
    success or a well-formed error reply, never errno 5 (an exception in the arbiter)."""
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_config_fuzz import TRICKY

    config = circus.write_config(f"""
        [watcher:target]
        cmd = {report_command(circus.tmp, "target")}
        autostart = false

        [watcher:steady]
        cmd = {report_command(circus.tmp, "steady")}
        """)
    arbiter = circus.start(config)
    ctl = zmq_clients.control(control_endpoint(circus.tmp))
    steady = wait_count(arbiter, "steady", 1)
    keys = [*options_of(WatcherConfig), *RLIMITS, *(f"stdout_stream.{k}" for k in STREAM_OPTIONS),
            "hooks.before_start", "env", "no_such_option"]
    values: list[Any] = [*TRICKY, None, 5, -1, 1.5, 1e400, [1, "a"], {"a": "b"}, True]
    internal = []
    for key in keys:
        for value in values:
            reply = ctl.request("set", name="target", options={key: value}, timeout=10)
            if reply["status"] == "error":
                assert isinstance(reply["reason"], str) and type(reply["errno"]) is int, reply
                if reply["errno"] == 5:
                    internal.append(f"{key} = {value!r:.40}: {reply['reason']}")
    assert not internal, "\n".join(internal[:20])
    assert arbiter.running() and real_pids(arbiter, "steady") == steady
    with capsys.disabled():
        print(f"\nset: {len(keys) * len(values)} option values sent, none an internal error")
