"""The cgroup module against a fake cgroupfs directory (no real cgroup is touched)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circus_sd.cgroups import (
    Cgroups,
    CgroupUnavailable,
    find_v2_mount,
    limits_of,
    own_v2_path,
    parse_flat_keyed,
)
from circus_sd.config.model import WatcherConfig
from circus_sd.config.options import OptionValueError, cpu_quota, memory_size

MOUNTINFO = (
    "25 1 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
    "30 25 0:27 / /proc rw - proc proc rw\n"
)


def fake_tree(root: Path, controllers: str = "cpu memory pids") -> Path:
    root.mkdir(parents=True)
    (root / "cgroup.procs").write_text("")
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


def test_finding_our_own_v2_cgroup() -> None:
    assert find_v2_mount(MOUNTINFO) == "/sys/fs/cgroup"
    assert find_v2_mount("30 25 0:27 / /proc rw - proc proc rw\n") is None
    assert own_v2_path("1:cpu:/\n0::/system.slice/circus-sd.service\n") == (
        "/system.slice/circus-sd.service"
    )


def test_the_root_cgroup_or_an_undelegated_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CgroupUnavailable, match="root cgroup"):
        Cgroups.setup(mountinfo=MOUNTINFO, proc_self_cgroup="0::/\n")
    with pytest.raises(CgroupUnavailable, match="no cgroup v2"):
        Cgroups.setup(mountinfo="30 25 0:27 / /proc rw - proc proc rw\n", proc_self_cgroup="0::/x")
    with pytest.raises(CgroupUnavailable, match="not a cgroup v2 directory"):
        Cgroups.setup(str(tmp_path))


def test_setup_moves_us_into_arbiter_and_enables_controllers(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "svc")
    cgroups = Cgroups.setup(str(root), pid=4242)
    assert (root / "arbiter" / "cgroup.procs").read_text() == "4242"
    assert cgroups.controllers == {"cpu", "memory", "pids"}
    # One write per controller; a real cgroupfs keeps them all, the fake keeps the last.
    assert (root / "cgroup.subtree_control").read_text() in {"+cpu", "+memory", "+pids"}


def test_limits_go_to_the_watcher_cgroup_and_missing_controllers_are_reported(
    tmp_path: Path,
) -> None:
    root = fake_tree(tmp_path / "svc", controllers="memory pids")
    cgroups = Cgroups.setup(str(root), pid=1)
    config = WatcherConfig(
        name="web",
        cmd="x",
        memory_max=memory_size("512M"),
        pids_max="64",
        cpu_max=cpu_quota("10%"),
        oom_group=True,
    )
    errors = cgroups.apply_limits("web", limits_of(config))
    directory = root / "watcher-web"
    assert (directory / "memory.max").read_text() == str(512 << 20)
    assert (directory / "pids.max").read_text() == "64"
    assert (directory / "memory.oom.group").read_text() == "1"
    assert errors == ["cpu.max: the cpu controller is not available here"]


def test_leaves_per_process_and_their_state(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "svc")
    cgroups = Cgroups.setup(str(root), pid=1)
    leaf = cgroups.new_leaf("web", 2, 7)
    assert leaf == root / "watcher-web" / "wid-2-7"
    (leaf / "cgroup.procs").write_text("10\n11\n")
    (leaf / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    assert cgroups.pids(leaf) == [10, 11]
    assert cgroups.populated(leaf)
    (leaf / "cgroup.kill").write_text("")
    cgroups.kill(leaf)
    assert (leaf / "cgroup.kill").read_text() == "1"
    (leaf / "cgroup.events").write_text("populated 0\nfrozen 0\n")
    assert not cgroups.populated(leaf)
    for name in os.listdir(leaf):
        (leaf / name).unlink()
    cgroups.remove_watcher("web")
    assert not (root / "watcher-web").exists()


def test_stats_and_memory_events_come_from_the_kernel_files(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "svc")
    cgroups = Cgroups.setup(str(root), pid=1)
    directory = cgroups.watcher_dir("web")
    (directory / "memory.current").write_text("1048576\n")
    (directory / "pids.current").write_text("3\n")
    (directory / "cpu.stat").write_text("usage_usec 500\nuser_usec 400\nnr_throttled 2\n")
    (directory / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n")
    assert cgroups.stats("web") == {
        "memory_current": 1048576,
        "pids_current": 3,
        "cpu_usage_usec": 500,
        "cpu_nr_throttled": 2,
    }
    assert cgroups.memory_events("web")["oom_kill"] == 1
    assert parse_flat_keyed("populated 1\nbogus\n") == {"populated": 1}


@pytest.mark.parametrize(
    ("raw", "value"),
    [("512M", str(512 << 20)), ("2g", str(2 << 30)), ("1024", "1024"), ("max", "max"), ("", None)],
)
def test_memory_sizes(raw: str, value: str | None) -> None:
    assert memory_size(raw) == value


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("10%", "10000 100000"),
        ("150%", "150000 100000"),
        ("max", "max 100000"),
        ("20000 50000", "20000 50000"),
    ],
)
def test_cpu_quotas(raw: str, value: str) -> None:
    assert cpu_quota(raw) == value


@pytest.mark.parametrize("raw", ["lots", "0%", "-5%", "1 2 3"])
def test_bad_cpu_quotas(raw: str) -> None:
    with pytest.raises(OptionValueError):
        cpu_quota(raw)
