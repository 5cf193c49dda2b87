"""circus-sd as a systemd service, under a real systemd 252 (PID 1 in a container)."""

from __future__ import annotations

import re
import time

from conftest import System

RECORDER = "/usr/bin/python3 /opt/payload/recorder.py"

TWO_WATCHERS = f"""
[watcher:db]
cmd = {RECORDER} db
numprocesses = 2
priority = 10
stop_signal = INT
graceful_timeout = 5

[watcher:web]
cmd = {RECORDER} web
numprocesses = 3
priority = 5
stop_signal = QUIT
graceful_timeout = 5
"""


def started(system: System) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in system.records():
        if record[1] == "start":
            counts[record[2]] = counts.get(record[2], 0) + 1
    return counts


def test_start_returns_when_every_process_runs(system: System) -> None:
    system.configure(TWO_WATCHERS)
    rc, out = system.systemctl("start", "circus-sd.service")
    assert rc == 0, out
    # No wait: Type=notify means start returned after READY=1, sent once all were spawned.
    assert len(system.pids_of("recorder.py db")) == 2
    assert len(system.pids_of("recorder.py web")) == 3
    assert system.show("ActiveState") == "active"
    assert system.show("SubState") == "running"
    assert system.show("StatusText") == "2/2 watchers active, 5 processes"
    main_pid = int(system.show("MainPID"))
    for pid in system.pids_of("recorder.py"):
        assert system.sh(f"ps -o ppid= -p {pid}").strip() == str(main_pid)
    # The arbiter's own log is in the unit's journal.
    messages = [e.get("MESSAGE", "") for e in system.journal("_SYSTEMD_UNIT=circus-sd.service")]
    assert any("circus-sd running 2 watcher(s)" in m for m in messages), messages[-10:]


def test_children_do_not_inherit_the_arbiters_systemd_variables(system: System) -> None:
    system.configure("""
[watcher:env]
cmd = /bin/sh -c 'env > /run/child-env; exec sleep 600'
copy_env = true
""")
    rc, out = system.systemctl("start", "circus-sd.service")
    assert rc == 0, out
    system.wait_until(
        lambda: "PATH=" in system.sh("cat /run/child-env 2>/dev/null || true"),
        10,
        "the child's environment dump",
    )
    env = system.sh("cat /run/child-env")
    names = {line.partition("=")[0] for line in env.splitlines()}
    assert not names & {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS"}
    assert "JOURNAL_STREAM" in names  # copy_env copies the rest
    assert "CIRCUS_WID=1" in env
    system.sh("rm -f /run/child-env")


def test_stop_goes_in_reverse_priority_with_each_watchers_signal(system: System) -> None:
    system.configure(TWO_WATCHERS)
    assert system.systemctl("start", "circus-sd.service")[0] == 0
    # Each child must have installed its signal handlers (it records "start" after that).
    system.wait_until(lambda: started(system) == {"db": 2, "web": 3}, 10, "5 recorders up")
    rc, out = system.systemctl("stop", "circus-sd.service")
    assert rc == 0, out
    assert system.show("ActiveState") == "inactive"
    assert system.show("Result") == "success"
    got = [r for r in system.records() if r[1].startswith("got-")]
    assert sorted((r[2], r[1]) for r in got) == sorted(
        [("web", "got-SIGQUIT")] * 3 + [("db", "got-SIGINT")] * 2
    )
    # db (priority 10) started first, so it stops last: every web stop precedes every db stop.
    last_web = max(float(r[0]) for r in got if r[2] == "web")
    first_db = min(float(r[0]) for r in got if r[2] == "db")
    assert last_web < first_db
    assert not system.pids_of("recorder.py")


def test_reload_applies_an_edited_config_and_refuses_a_broken_one(system: System) -> None:
    system.configure(TWO_WATCHERS)
    assert system.systemctl("start", "circus-sd.service")[0] == 0
    main_pid = system.show("MainPID")
    db_pids = sorted(system.pids_of("recorder.py db"))
    system.configure(f"""
[watcher:db]
cmd = {RECORDER} db
numprocesses = 2
priority = 10
stop_signal = INT
graceful_timeout = 5

[watcher:cache]
cmd = {RECORDER} cache
numprocesses = 1
""")
    rc, out = system.systemctl("reload", "circus-sd.service")
    assert rc == 0, out
    assert len(system.pids_of("recorder.py cache")) == 1
    assert system.pids_of("recorder.py web") == []
    assert sorted(system.pids_of("recorder.py db")) == db_pids  # unchanged: not restarted
    assert system.show("MainPID") == main_pid
    assert system.show("StatusText") == "2/2 watchers active, 3 processes"

    system.configure("[watcher:db]\ncmd = " + RECORDER + " db\nnumprocesses = lots\n")
    rc, out = system.systemctl("reload", "circus-sd.service")
    assert rc != 0
    assert system.show("ActiveState") == "active"
    assert sorted(system.pids_of("recorder.py db")) == db_pids
    assert len(system.pids_of("recorder.py cache")) == 1
    messages = [e.get("MESSAGE", "") for e in system.journal("_SYSTEMD_UNIT=circus-sd.service")]
    assert any("reload refused" in m and "numprocesses" in m for m in messages)


def test_bad_config_fails_the_start_and_is_not_restarted(system: System) -> None:
    # A file that cannot be parsed (a missing program is only that watcher's failure).
    system.configure("[watcher:x]\ncmd = sleep 60\nnumprocesses = many\n")
    rc, _out = system.systemctl("start", "circus-sd.service")
    assert rc != 0
    assert system.show("ExecMainStatus") == "78"
    time.sleep(0.5)  # RestartSec=1: had it restarted, NRestarts would now be growing
    assert system.show("NRestarts") == "0"
    messages = [e.get("MESSAGE", "") for e in system.journal("_SYSTEMD_UNIT=circus-sd.service")]
    assert any("numprocesses" in m and "many" in m for m in messages)


def test_a_hung_arbiter_is_killed_by_the_watchdog_and_restarted(system: System) -> None:
    system.dropin("[Service]\nWatchdogSec=2\nTimeoutAbortSec=2\nRestartSec=0.2\n")
    system.configure(TWO_WATCHERS)
    assert system.systemctl("start", "circus-sd.service")[0] == 0
    old_main = system.show("MainPID")
    old_pids = set(system.pids_of("recorder.py"))
    system.sh(f"kill -STOP {old_main}")
    system.wait_until(
        lambda: (
            system.show("MainPID") not in (old_main, "0") and system.show("ActiveState") == "active"
        ),
        20,
        "systemd to restart the stopped arbiter",
    )
    assert int(system.show("NRestarts")) >= 1
    assert system.show("Result") in ("success", "watchdog")
    # Back at the configured count, with none of the old processes left (no duplicates).
    system.wait_until(lambda: len(system.pids_of("recorder.py")) == 5, 10, "5 processes again")
    assert not old_pids & set(system.pids_of("recorder.py"))
    messages = [e.get("MESSAGE", "") for e in system.journal()]
    assert any("Watchdog timeout" in m for m in messages)


NOTIFIER = "/usr/bin/python3 /opt/children/notifier.py"


def test_notify_children_gate_readiness_and_after_orders_watchers(system: System) -> None:
    system.configure(f"""
[circus]
ready_wait = true

[watcher:db]
cmd = {NOTIFIER} 1.0 -1 0.5
notify = true
numprocesses = 2

[watcher:web]
cmd = {NOTIFIER} 0 -1 0.5
notify = true
priority = 10
after = db
""")
    rc, out = system.systemctl("start", "circus-sd.service")
    assert rc == 0, out
    # systemctl start returned after READY=1, with ready_wait: every process has said READY=1.
    assert len(system.pids_of("notifier.py 1.0")) == 2
    assert len(system.pids_of("notifier.py 0 ")) == 1
    assert system.show("StatusText") == "2/2 watchers active, 3 processes"
    messages = [e.get("MESSAGE", "") for e in system.journal("_SYSTEMD_UNIT=circus-sd.service")]
    ready_db = [i for i, m in enumerate(messages) if re.search(r"db\[\d\] pid \d+ ready", m)]
    web_starts = [i for i, m in enumerate(messages) if "web: starting" in m]
    assert len(ready_db) == 2 and web_starts and max(ready_db) < web_starts[-1]


def test_a_child_that_stops_pinging_is_restarted_under_systemd(system: System) -> None:
    system.configure(f"""
[watcher:pinger]
cmd = {NOTIFIER} 0 2 0.2
notify = true
watchdog_sec = 1
""")
    assert system.systemctl("start", "circus-sd.service")[0] == 0
    (first,) = system.pids_of("notifier.py")
    system.wait_until(
        lambda: system.pids_of("notifier.py") not in ([], [first]), 10, "a new pinger"
    )
    messages = [e.get("MESSAGE", "") for e in system.journal("_SYSTEMD_UNIT=circus-sd.service")]
    assert any(f"pid {first} sent no WATCHDOG=1" in m for m in messages)


SLOW_SERVER = "/bin/sh -c 'echo booting; sleep {delay}; echo serving on $$; exec sleep 600'"


def test_start_with_ready_wait_returns_once_log_lines_say_ready(system: System) -> None:
    system.configure(f"""
[circus]
ready_wait = true

[watcher:api]
cmd = {SLOW_SERVER.format(delay=1)}
numprocesses = 2
ready_log_line = ^serving on \\d+$
""")
    started_at = time.monotonic()
    rc, out = system.systemctl("start", "circus-sd.service")
    assert rc == 0, out
    assert time.monotonic() - started_at >= 1.0  # it did wait for the lines
    assert system.show("StatusText") == "1/1 watchers active, 2 processes"
    messages = [e.get("MESSAGE", "") for e in system.journal("_SYSTEMD_UNIT=circus-sd.service")]
    ready = [m for m in messages if re.search(r"api\[\d\] pid \d+ ready \(ready_log_line\)", m)]
    assert len(ready) == 2, messages[-20:]


def test_a_sighup_reload_is_seen_by_systemd_as_reloading_then_ready(system: System) -> None:
    system.configure(f"[watcher:db]\ncmd = {RECORDER} db\n")
    assert system.systemctl("start", "circus-sd.service")[0] == 0
    # The reload starts a watcher that takes 2 s to be ready: it lasts that long.
    system.configure(f"""
[watcher:db]
cmd = {RECORDER} db

[watcher:slow]
cmd = {SLOW_SERVER.format(delay=2)}
ready_log_line = ^serving on
""")
    # A plain SIGHUP, not `systemctl reload`: no reload job of systemd's own, so the unit shows
    # "reloading" only because the arbiter sent RELOADING=1, and "active" again after READY=1.
    system.sh(f"kill -HUP {system.show('MainPID')}")
    seen: list[str] = []

    def reloaded() -> bool:
        state = system.show("ActiveState")
        if not seen or seen[-1] != state:
            seen.append(state)
        return "reloading" in seen and state == "active"

    system.wait_until(reloaded, 15, "ActiveState reloading, then active")
    messages = [e.get("MESSAGE", "") for e in system.journal("_SYSTEMD_UNIT=circus-sd.service")]
    assert any(re.search(r"slow\[1\] pid \d+ ready \(ready_log_line\)", m) for m in messages)
