"""Per-watcher cgroups under systemd's Delegate=yes (container tier: no controllers here, so
these check placement, exact tracking and cgroup.kill; limits need the VM tier)."""

from __future__ import annotations

from conftest import System

CHILD = "/usr/bin/python3 /opt/payload/cgchild.py"
SERVICE = "/system.slice/circus-sd.service"


def records(system: System, kind: str) -> list[list[str]]:
    text = system.sh("cat /run/cg.log 2>/dev/null || true")
    return [line.split() for line in text.splitlines() if line.startswith(kind + " ")]


def alive(system: System, pid: str) -> bool:
    state = system.sh(f"ps -o stat= -p {pid} || true").strip()
    return bool(state) and not state.startswith("Z")


def start(system: System, ini: str) -> None:
    system.sh("rm -f /run/cg.log")
    system.configure(ini)
    rc, out = system.systemctl("start", "circus-sd.service")
    assert rc == 0, out


def test_each_process_runs_in_its_own_leaf_from_its_first_instruction(system: System) -> None:
    start(system, f"[watcher:web]\ncmd = {CHILD} web\nnumprocesses = 2\n")
    system.wait_until(lambda: len(records(system, "start")) == 2, 10, "2 workers")
    leaves = sorted(r[4] for r in records(system, "start"))
    assert leaves == [
        f"0::{SERVICE}/watcher-web/wid-1-1",
        f"0::{SERVICE}/watcher-web/wid-2-2",
    ]
    main = system.show("MainPID")
    assert system.sh(f"grep ^0:: /proc/{main}/cgroup").strip() == f"0::{SERVICE}/arbiter"
    # The arbiter's cgroup: only the arbiter and its spawner; the service's own: no process.
    assert len(system.sh(f"cat /sys/fs/cgroup{SERVICE}/arbiter/cgroup.procs").split()) == 2
    assert system.sh(f"cat /sys/fs/cgroup{SERVICE}/cgroup.procs").strip() == ""
    messages = [e.get("MESSAGE", "") for e in system.journal("_SYSTEMD_UNIT=circus-sd.service")]
    assert any("per-watcher cgroups under /sys/fs/cgroup" + SERVICE in m for m in messages)


def test_stop_kills_a_daemonized_grandchild_and_empties_the_leaf(system: System) -> None:
    start(system, f"[watcher:web]\ncmd = {CHILD} web --daemon\ngraceful_timeout = 1\n")
    system.wait_until(lambda: records(system, "daemon"), 10, "the daemon")
    daemon = records(system, "daemon")[0][3]
    # The daemon left its parent's session and process group, but not its cgroup.
    assert records(system, "daemon")[0][4] == f"0::{SERVICE}/watcher-web/wid-1-1"
    assert system.sh("circusctl stop web --waiting").strip() == "ok"
    assert not alive(system, daemon)
    remaining = system.sh(f"ls /sys/fs/cgroup{SERVICE}/watcher-web").split()
    assert not [name for name in remaining if name.startswith("wid-")]
    assert system.show("ActiveState") == "active"


def test_a_dead_workers_leftovers_are_killed_and_it_is_replaced(system: System) -> None:
    start(system, f"[watcher:web]\ncmd = {CHILD} web --daemon\n")
    system.wait_until(lambda: records(system, "daemon"), 10, "the daemon")
    worker = records(system, "start")[0][3]
    daemon = records(system, "daemon")[0][3]
    system.sh(f"kill -9 {worker}")
    system.wait_until(lambda: len(records(system, "daemon")) == 2, 10, "a new worker's daemon")
    assert not alive(system, daemon)
    assert records(system, "start")[-1][4] == f"0::{SERVICE}/watcher-web/wid-1-2"


def test_sigkill_escalation_takes_the_whole_tree(system: System) -> None:
    start(
        system, f"[watcher:web]\ncmd = {CHILD} web --daemon --ignore-term\ngraceful_timeout = 1\n"
    )
    system.wait_until(lambda: records(system, "daemon"), 10, "the daemon")
    pids = [records(system, "start")[0][3], records(system, "daemon")[0][3]]
    rc, out = system.systemctl("stop", "circus-sd.service")
    assert rc == 0, out
    assert system.show("Result") == "success"  # not systemd's SIGKILL: ours, after 1 s
    assert not any(alive(system, pid) for pid in pids)
    messages = [e.get("MESSAGE", "") for e in system.journal("_SYSTEMD_UNIT=circus-sd.service")]
    assert any("SIGKILL" in m for m in messages)


def test_freeze_and_thaw(system: System) -> None:
    start(system, f"[watcher:web]\ncmd = {CHILD} web\n")
    system.wait_until(lambda: records(system, "start"), 10, "the worker")
    events = f"/sys/fs/cgroup{SERVICE}/watcher-web/cgroup.events"
    assert system.sh("circusctl freeze web").strip() == "ok"
    system.wait_until(lambda: "frozen 1" in system.sh(f"cat {events}"), 5, "frozen 1")
    assert system.sh("circusctl thaw web").strip() == "ok"
    system.wait_until(lambda: "frozen 0" in system.sh(f"cat {events}"), 5, "frozen 0")
    # Frozen, not stopped: the same worker goes on.
    (record,) = records(system, "start")
    assert alive(system, record[3])
