"""Faults under a real systemd (container tier): the arbiter SIGKILLed, journald stopped."""

from __future__ import annotations

import json
import time

from conftest import System

RECORDER = "/usr/bin/python3 /opt/payload/recorder.py"
CGCHILD = "/usr/bin/python3 /opt/payload/cgchild.py"
TICKER = "/usr/bin/python3 /opt/payload/ticker.py"
SERVICE_CGROUP = "/sys/fs/cgroup/system.slice/circus-sd.service"


def counts(system: System, names: dict[str, str]) -> dict[str, list[int]]:
    """Live pids per watcher, by a pattern of its command line (the kernel's view)."""
    return {name: sorted(system.pids_of(pattern)) for name, pattern in names.items()}


def service_pids(system: System) -> set[int]:
    """Every process in the service's cgroup tree (arbiter, spawner, each watcher's leaves)."""
    out = system.sh(f"find {SERVICE_CGROUP} -name cgroup.procs -exec cat {{}} +")
    return {int(pid) for pid in out.split()}


def spawners(system: System, main: int) -> set[int]:
    """The arbiter's own fork(s): children with the arbiter's command line."""
    out = system.sh(f"ps -o pid=,args= --ppid {main} | grep circus-sd || true")
    return {int(line.split()[0]) for line in out.splitlines()}


def test_a_sigkilled_arbiter_comes_back_with_every_watcher_at_its_count(system: System) -> None:
    """SIGKILL leaves the arbiter no chance to stop anything. systemd (KillMode=mixed, a failed
    main process) kills what is left of the old tree, cgroup leaves included, and restarts the
    unit; the new arbiter starts every watcher: the configured counts, no duplicate, no orphan
    (a daemonized grandchild included), nothing else in the service's cgroup."""
    system.dropin("[Service]\nRestartSec=0.2\n")
    system.configure(f"""
[watcher:db]
cmd = {RECORDER} db
numprocesses = 2

[watcher:web]
cmd = {RECORDER} web
numprocesses = 3

[watcher:daemon]
cmd = {CGCHILD} daemon --daemon
graceful_timeout = 1
""")
    patterns = {"db": "recorder.py db", "web": "recorder.py web", "daemon": "cgchild.py daemon"}
    # The daemon watcher: its worker and the grandchild it daemonized.
    expected = {"db": 2, "web": 3, "daemon": 2}
    assert system.systemctl("start", "circus-sd.service")[0] == 0
    system.wait_until(
        lambda: {k: len(v) for k, v in counts(system, patterns).items()} == expected,
        10, "every watcher at its count",
    )
    before = counts(system, patterns)
    old_main = int(system.show("MainPID"))
    old_tree = service_pids(system)

    system.sh(f"kill -KILL {old_main}")
    system.wait_until(
        lambda: system.show("MainPID") not in (str(old_main), "0")
        and system.show("ActiveState") == "active",
        20, "systemd to restart the killed arbiter",
    )
    system.wait_until(
        lambda: {k: len(v) for k, v in counts(system, patterns).items()} == expected,
        10, "every watcher back at its count",
    )
    after = counts(system, patterns)
    main = int(system.show("MainPID"))

    assert system.show("NRestarts") == "1"
    for name in expected:
        assert not set(before[name]) & set(after[name]), f"{name}: an old process survived"
    assert not old_tree & service_pids(system), "a process of the old tree survived"
    listed = {p for pids in after.values() for p in pids}
    assert service_pids(system) == {main, *spawners(system, main), *listed}, "an orphan"
    status = system.sh("circusctl status")
    assert sorted(status.split("\n")[:-1]) == ["daemon: active", "db: active", "web: active"]


JOURNALD_UNITS = (
    "systemd-journald.socket",
    "systemd-journald-dev-log.socket",
    "systemd-journald-audit.socket",
    "systemd-journald.service",
)
OUTAGE = 8.0  # seconds journald stays stopped


def test_supervision_goes_on_while_journald_is_stopped_and_logs_resume(system: System) -> None:
    """journald stopped (its sockets too) while a watcher writes 100 lines a second to the
    journal (JournalStream, the default under systemd): the arbiter answers every command
    promptly, replaces a killed process, resizes a watcher, and is not restarted; the lines it
    could not deliver are counted (`dropped` events); once journald is back, lines arrive again.
    A journald restart keeps even the arbiter's own log stream (journald's fd store); a stop
    closes every service's stdout stream, the arbiter's too, until the service restarts.
    """
    system.configure(f"""
[watcher:ticker]
cmd = {TICKER}

[watcher:web]
cmd = {RECORDER} web
numprocesses = 2
""")
    assert system.systemctl("start", "circus-sd.service")[0] == 0
    main = system.show("MainPID")
    system.wait_until(lambda: len(system.pids_of("recorder.py web")) == 2, 10, "2 web processes")
    system.wait_until(lambda: ticks(system), 10, "ticker lines in the journal")

    restarted = time.time()
    assert system.systemctl("restart", "systemd-journald.service")[0] == 0
    assert system.sh("circusctl --timeout 5 decr web --waiting").strip() == "1"
    assert system.sh("circusctl --timeout 5 stop web --waiting").strip() == "ok"
    system.wait_until(lambda: any("web: stopped" in m for m in own_log(system, restarted)), 10,
                      "the arbiter's own log after a journald restart")
    assert system.sh("circusctl --timeout 5 start web --waiting").strip() == "ok"

    listener = ("echo $$ > /run/listener.pid; "
                "exec timeout 60 circusctl listen watcher.ticker.dropped > /run/dropped.log 2>&1")
    system.sh(f"setsid -f sh -c '{listener}' < /dev/null > /dev/null 2>&1")
    try:
        journald_outage(system, main)
    finally:
        system.sh("kill $(cat /run/listener.pid) 2>/dev/null; rm -f /run/listener.pid", check=False)
    events = [json.loads(line.partition(" ")[2])
              for line in system.sh("cat /run/dropped.log").splitlines()
              if line.startswith("watcher.ticker.dropped ")]
    assert {(e["stream"], e["sink"]) for e in events} == {("stdout", "journald")}, events
    assert sum(e["lines"] for e in events) > 0


def journald_outage(system: System, main: str) -> None:
    """journald and its sockets stopped for OUTAGE seconds, while the arbiter is driven."""
    slowest = 0.0
    try:
        rc, out = system.systemctl("stop", *JOURNALD_UNITS)
        assert rc == 0, out
        assert system.ct.show("systemd-journald.service", "ActiveState") == "inactive"
        stopped_at = time.monotonic()
        victim = system.pids_of("recorder.py web")[0]
        system.sh(f"kill -KILL {victim}")
        resized = False
        while time.monotonic() - stopped_at < OUTAGE:
            started = time.monotonic()
            status = system.sh("circusctl --timeout 5 status")
            slowest = max(slowest, time.monotonic() - started)
            assert "web: active" in status and "ticker: active" in status, status
            if not resized:
                assert system.sh("circusctl --timeout 5 incr web 2 --waiting").strip() == "3"
                resized = True
            time.sleep(0.2)
        web = system.pids_of("recorder.py web")
        assert len(web) == 3 and victim not in web, "supervision stalled without journald"
        assert system.show("MainPID") == main and system.show("NRestarts") == "0"
    finally:
        system.systemctl("start", *JOURNALD_UNITS)
    assert slowest < 2.0, f"circusctl status took up to {slowest:.2f} s without journald"

    # journald is back: the ticker's lines reach it again, from the same process.
    resumed = time.time()
    system.wait_until(
        lambda: any(float(e["__REALTIME_TIMESTAMP"]) / 1e6 > resumed for e in ticks(system)),
        15, "ticker lines after journald came back",
    )
    assert system.show("MainPID") == main
    system.wait_until(lambda: "watcher.ticker.dropped" in system.sh("cat /run/dropped.log"), 10,
                      "a dropped event for the lines journald missed")


def ticks(system: System) -> list[dict[str, str]]:
    # The ticker's output: its lifecycle lines share WATCHER=ticker, with a MESSAGE_ID.
    return [
        e for e in system.journal("WATCHER=ticker")
        if "tick" in e.get("MESSAGE", "") and "MESSAGE_ID" not in e
    ]



def own_log(system: System, since: float) -> list[str]:
    """The arbiter's own log lines (not its processes' output) written after `since`: its
    lifecycle lines carry their watcher's fields too, with a MESSAGE_ID that output lacks."""
    entries = system.journal("_SYSTEMD_UNIT=circus-sd.service")
    return [
        e.get("MESSAGE", "") for e in entries
        if ("WATCHER" not in e or "MESSAGE_ID" in e)
        and float(e["__REALTIME_TIMESTAMP"]) / 1e6 > since
    ]
