"""`systemctl reload` of the shipped unit, when the reload takes longer than circusctl's 5 s."""

from __future__ import annotations

import time

from conftest import System

# Takes 7 s to stop after SIGTERM (graceful_timeout 10 lets it); `: slow-vN` marks the version.
SLOW_STOPPER = (
    "/bin/sh -c ': slow-{version}; trap \"sleep 7; exit 0\" TERM; "
    "while :; do sleep 0.1; done'"
)


def slow_watcher(version: str) -> str:
    return f"""
[watcher:slow]
cmd = {SLOW_STOPPER.format(version=version)}
graceful_timeout = 10
"""


def pids_of_version(system: System, version: str) -> list[int]:
    out = system.sh(f"pgrep -f '^/bin/sh -c : slow-{version};' || true")
    return [int(pid) for pid in out.split()]


def test_a_reload_that_restarts_a_slow_stopping_watcher_succeeds(system: System) -> None:
    system.configure(slow_watcher("v1"))
    assert system.systemctl("start", "circus-sd.service")[0] == 0
    system.wait_until(lambda: len(pids_of_version(system, "v1")) == 1, 10, "slow-v1 running")
    main_pid = system.show("MainPID")

    # `cmd` changed: the watcher is restarted, its old process taking 7 s to stop.
    system.configure(slow_watcher("v2"))
    started = time.monotonic()
    rc, out = system.systemctl("reload", "circus-sd.service", timeout=120)
    took = time.monotonic() - started
    assert rc == 0, out
    # systemctl returned once the reload was applied, not before: the new process runs now.
    assert took >= 7, f"reload returned after {took:.1f} s"
    assert pids_of_version(system, "v1") == []
    assert len(pids_of_version(system, "v2")) == 1
    assert system.show("ActiveState") == "active"
    assert system.show("MainPID") == main_pid
    assert system.show("StatusText") == "1/1 watchers active, 1 processes"
    messages = [e.get("MESSAGE", "") for e in system.journal("_SYSTEMD_UNIT=circus-sd.service")]
    assert any("configuration reloaded" in m for m in messages), messages[-10:]


def test_a_refused_file_fails_the_reload_at_once_with_its_reason(system: System) -> None:
    system.configure(slow_watcher("v1"))
    assert system.systemctl("start", "circus-sd.service")[0] == 0
    system.wait_until(lambda: len(pids_of_version(system, "v1")) == 1, 10, "slow-v1 running")
    (pid,) = pids_of_version(system, "v1")

    system.configure(slow_watcher("v2") + "numprocesses = lots\n")
    rc, _out = system.systemctl("reload", "circus-sd.service", timeout=60)
    assert rc != 0
    assert system.show("ActiveState") == "active"
    assert pids_of_version(system, "v1") == [pid]  # kept, not restarted
    # circusctl's error, as ExecReload= printed it into the unit's journal: file, line, option.
    messages = [e.get("MESSAGE", "") for e in system.journal("_SYSTEMD_UNIT=circus-sd.service")]
    assert any(
        "reloadconfig refused" in m and "/etc/circus-sd/circus.ini:5" in m and "numprocesses" in m
        for m in messages
    ), messages[-10:]
