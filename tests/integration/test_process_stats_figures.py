"""`stats` reads /proc itself (process_stats.py): its figures are still psutil's, for processes
of every kind (a long name, niced, another user, busy, a zombie, with children)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from circus_sd.process_stats import NO_SUCH_PROCESS, ProcessStats
from circus_sd.sizes import human_bytes

pytestmark = pytest.mark.timeout(60)

BUSY = "import time\nend = time.time() + 20\nwhile time.time() < end: pass"


@pytest.fixture
def children(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    # Past the kernel's 15 bytes of name: psutil takes the name from the command line.
    long_name = tmp_path / "a-program-with-a-long-name"
    shutil.copy("/bin/sleep", long_name)
    commands = [
        ["/bin/sleep", "60"],
        [str(long_name), "60"],
        ["nice", "-n", "7", "/bin/sleep", "60"],
        [sys.executable, "-c", BUSY],
        ["/bin/true"],  # left a zombie: not waited for until the end
        ["sh", "-c", "sleep 60 & sleep 60 & wait"],
    ]
    if os.geteuid() == 0 and shutil.which("setpriv"):
        commands.append(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                         "/bin/sleep", "60"])
    started = [subprocess.Popen(command) for command in commands]
    try:
        yield started
    finally:
        for child in started:
            for descendant in _descendants(child.pid):
                descendant.kill()
            child.kill()
            child.wait()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _psutil_figures(process: psutil.Process) -> dict[str, Any]:
    """What process_stats used to read through psutil."""
    with process.oneshot():
        memory = process.memory_info()
        times = process.cpu_times()
        return {
            "pid": process.pid,
            "mem_info1": human_bytes(memory.rss),
            "mem_info2": human_bytes(memory.vms),
            "rss": memory.rss,
            "vms": memory.vms,
            "cpu_seconds": times.user + times.system,
            "mem": round(process.memory_percent(), 1),
            "username": process.username(),
            "nice": process.nice(),
            "cmdline": process.name(),
            "create_time": process.create_time(),
        }


def _same(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    differ = []
    for key, value in theirs.items():
        # CPU time moves between the two reads of a busy process.
        close = {"cpu_seconds": 0.05, "create_time": 0.02}.get(key)
        if close is not None:
            if abs(ours[key] - value) > close:
                differ.append(f"{key}: {ours[key]} != {value}")
        elif ours[key] != value:
            differ.append(f"{key}: {ours[key]!r} != {value!r}")
    return differ


def test_the_figures_are_psutil_s(children: list[subprocess.Popen[bytes]]) -> None:
    time.sleep(0.5)  # each has exec'd its program (and the shell has forked its two)
    stats = ProcessStats()
    for call in range(2):
        for child in children:
            info = stats.info(child.pid, extended=True, wid=7)
            assert info != NO_SUCH_PROCESS
            assert _same(info, _psutil_figures(psutil.Process(child.pid))) == [], child.args
            assert info["wid"] == 7 and info["started"] == info["create_time"]
            assert set(info) >= {"cpu", "ctime", "age", "children"}
            assert sorted(c["pid"] for c in info["children"]) == sorted(
                d.pid for d in _descendants(child.pid)
            )
        if call == 0:
            time.sleep(0.3)
    assert stats.info(children[1].pid)["cmdline"] == "a-program-with-a-long-name"
    assert stats.info(children[2].pid)["nice"] == 7
    # The busy one: a percentage since the previous call, spaced over a few scheduler ticks
    # (a good share of a core even on a busy machine, as in test_process_cpu).
    time.sleep(0.3)
    assert stats.info(children[3].pid)["cpu"] > 5.0
    assert len(stats.info(children[5].pid)["children"]) == 2
    if len(children) > 6:
        assert stats.info(children[6].pid)["username"] == psutil.Process(
            children[6].pid
        ).username()


def test_a_process_gone_is_no_such_process() -> None:
    child = subprocess.Popen(["/bin/true"])
    child.wait()
    assert ProcessStats().info(child.pid) == NO_SUCH_PROCESS
