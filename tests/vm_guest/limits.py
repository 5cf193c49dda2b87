"""cgroup limits per watcher on a real kernel with controllers (run inside the test VM by
run.sh; not collected on the host). Each check also shows the other watcher is unaffected."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SERVICE = Path("/sys/fs/cgroup/system.slice/circus-sd.service")
PY = "/usr/bin/python3"
HERE = Path(__file__).resolve().parent
BUSY = "while True: pass"


def sh(command: str) -> str:
    return subprocess.run(command, shell=True, capture_output=True, text=True, check=True,
                          timeout=60).stdout


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def pids(name: str) -> list[int]:
    reply = json.loads(sh(f"circusctl --json list {name}"))
    return list(reply["pids"])


def start(ini: str) -> None:
    Path("/etc/circus-sd").mkdir(exist_ok=True)
    Path("/etc/circus-sd/circus.ini").write_text(ini)
    sh("systemctl start circus-sd.service")


@pytest.fixture(autouse=True)
def service() -> Iterator[None]:
    yield
    subprocess.run(["systemctl", "stop", "circus-sd.service"], check=False, timeout=120)
    subprocess.run(["systemctl", "reset-failed", "circus-sd.service"], check=False)


def calm_watcher() -> str:
    return "[watcher:calm]\ncmd = sleep 600\n"


def test_controllers_are_enabled_for_the_watchers() -> None:
    start(calm_watcher())
    enabled = (SERVICE / "cgroup.subtree_control").read_text().split()
    assert {"cpu", "memory", "pids"} <= set(enabled)


def test_memory_max_oom_kills_inside_the_watcher_only() -> None:
    start(f"[watcher:hog]\ncmd = {PY} {HERE / 'hog.py'}\nmemory_max = 64M\n"
          "memory_swap_max = 0\nbackoff_initial = 5\n" + calm_watcher())
    calm = pids("calm")
    events = SERVICE / "watcher-hog" / "memory.events"
    wait_until(lambda: "oom_kill 0" not in events.read_text(), 60, "an OOM kill in hog")

    def logged() -> str:
        return sh("journalctl -u circus-sd --no-pager -o cat")

    # The oom event's log line, and the victim's exit as seen by its watcher.
    wait_until(lambda: "OOM killer killed" in logged(), 10, "the oom log line")
    wait_until(lambda: "hog[1]" in logged() and "killed by SIGKILL" in logged(), 10, "the reap")
    assert pids("calm") == calm
    assert (SERVICE / "watcher-hog" / "memory.max").read_text().strip() == str(64 << 20)


def test_pids_max_stops_a_fork_loop() -> None:
    start(f"[watcher:forker]\ncmd = {PY} {HERE / 'forker.py'}\npids_max = 20\n" + calm_watcher())
    wait_until(lambda: Path("/run/forker.log").exists(), 60, "the fork loop to hit the limit")
    forked, errno = Path("/run/forker.log").read_text().split()
    assert errno == "11"  # EAGAIN
    assert int(forked) < 20
    assert int((SERVICE / "watcher-forker" / "pids.current").read_text()) <= 20
    assert len(pids("calm")) == 1


def test_cpu_max_holds_a_busy_loop_near_its_quota_and_set_changes_it_live() -> None:
    start(f"[watcher:busy]\ncmd = {PY} -c '{BUSY}'\ncpu_max = 10%\n" + calm_watcher())
    stat = SERVICE / "watcher-busy" / "cpu.stat"

    def usage() -> int:
        return int(stat.read_text().split()[1])

    time.sleep(0.5)  # let it start spinning (the measurement window is what counts)
    before, start_time = usage(), time.monotonic()
    time.sleep(3)
    share = (usage() - before) / 1e6 / (time.monotonic() - start_time)
    assert 0.03 < share < 0.2, f"busy used {share:.0%} of a core under cpu_max = 10%"
    assert "nr_throttled 0" not in stat.read_text()
    (busy,) = pids("busy")
    sh("circusctl set busy cpu_max 50% --waiting")
    assert (SERVICE / "watcher-busy" / "cpu.max").read_text().split() == ["50000", "100000"]
    assert pids("busy") == [busy]  # a limit, not a restart


def open_files(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open files limit for {pid}")


def test_root_outside_systemd_raises_its_descriptor_hard_limit(tmp_path: Path) -> None:
    """A root shell's hard limit (4096 here) would bound the arbiter far below the machine:
    outside systemd, root raises it up to fs.nr_open (at most a million); children keep theirs."""
    ini = tmp_path / "circus.ini"
    ini.write_text(
        f"[circus]\nendpoint = ipc://{tmp_path}/c.sock\npubsub_endpoint = ipc://{tmp_path}/e.sock\n"
        "[watcher:calm]\ncmd = sleep 600\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "NOTIFY_SOCKET")}
    arbiter = subprocess.Popen(
        ["prlimit", "--nofile=1024:4096", "circus-sd", str(ini)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        ceiling = min(int(Path("/proc/sys/fs/nr_open").read_text()), 1 << 20)
        wait_until(lambda: open_files(arbiter.pid) == (ceiling, ceiling), 20, "the raised limit")

        def calm() -> int | None:
            found = sh(f"pgrep -P {arbiter.pid} -x sleep || true").split()
            return int(found[0]) if found else None

        wait_until(calm, 20, "the watcher's process")
        child = calm()
        assert child is not None and open_files(child) == (1024, 4096)
    finally:
        arbiter.terminate()
        arbiter.wait(timeout=30)
