"""cgroup v2 per watcher: the arbiter's delegated subtree, limits, leaves, kill, freeze, stats.

Layout below the arbiter's own delegated cgroup (e.g. system.slice/circus-sd.service):

    arbiter/                     the arbiter and its spawner ("no internal processes" rule)
    watcher-<name>/              a watcher: its limits (memory.max, cpu.max, pids.max...) apply here
    watcher-<name>/wid-<n>-<k>/  one process and all its descendants (k: the spawn's number)

Only files below that cgroup are ever written (systemd's single-writer rule). Every path comes
from the injected mount point and /proc/self/cgroup text, so tests can run on a fake directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import signal
from collections.abc import Mapping
from pathlib import Path

from circus_sd.config.model import WatcherConfig

# The controllers circus-sd enables for its watchers, when the parent offers them.
WANTED_CONTROLLERS = ("cpu", "memory", "pids", "io")


class CgroupUnavailable(Exception):
    """Why per-watcher cgroups are off here (said once in the log)."""


def find_v2_mount(mountinfo: str) -> str | None:
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        if post.split()[:1] == ["cgroup2"]:
            return pre.split()[4]
    return None


def own_v2_path(proc_self_cgroup: str) -> str | None:
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip()
    return None


def is_delegated(directory: Path) -> bool:
    """systemd marks a Delegate=yes cgroup with the trusted.delegate (or user.delegate) xattr."""
    for name in ("trusted.delegate", "user.delegate"):
        try:
            if os.getxattr(directory, name) == b"1":
                return True
        except OSError:
            continue
    return False


def _read(path: Path) -> str:
    return path.read_text().strip()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def parse_flat_keyed(text: str) -> dict[str, int]:
    """`key value` lines (memory.events, cpu.stat, cgroup.events) as a dict of ints."""
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values


@dataclasses.dataclass
class Cgroups:
    """The arbiter's delegated subtree and what it puts there."""

    root: Path
    controllers: frozenset[str]

    @classmethod
    def setup(
        cls,
        cgroup_root: str | None = None,
        *,
        mountinfo: str | None = None,
        proc_self_cgroup: str | None = None,
        pid: int | None = None,
        extra_pids: tuple[int, ...] = (),
    ) -> Cgroups:
        """Find our delegated cgroup, move this process into `arbiter/`, enable controllers.

        Raises CgroupUnavailable with the reason when there is no v2 tree we may write to.
        """
        if cgroup_root:
            root = Path(cgroup_root)
            if not (root / "cgroup.procs").exists():
                raise CgroupUnavailable(f"cgroup_root {root} is not a cgroup v2 directory")
        else:
            mount = find_v2_mount(mountinfo or Path("/proc/self/mountinfo").read_text())
            if mount is None:
                raise CgroupUnavailable("no cgroup v2 hierarchy is mounted")
            own = own_v2_path(proc_self_cgroup or Path("/proc/self/cgroup").read_text())
            if not own or own == "/":
                raise CgroupUnavailable("we are in the root cgroup (not a systemd service)")
            root = Path(os.path.normpath(mount + own))
            if root.name == "arbiter" and is_delegated(root.parent):
                root = root.parent  # restarted in place (e.g. after an exec): already moved
            elif not is_delegated(root):
                raise CgroupUnavailable(
                    f"{root} is not delegated to circus-sd (run it with Delegate=yes, or set "
                    "cgroup_root)"
                )
        if not os.access(root, os.W_OK):
            raise CgroupUnavailable(f"{root} is not writable")
        arbiter = root / "arbiter"
        arbiter.mkdir(exist_ok=True)
        for member in (pid or os.getpid(), *extra_pids):
            _write(arbiter / "cgroup.procs", str(member))
        available = set(_read(root / "cgroup.controllers").split())
        enabled = set()
        for controller in WANTED_CONTROLLERS:
            if controller not in available:
                continue
            try:
                _write(root / "cgroup.subtree_control", f"+{controller}")
            except OSError:
                continue
            enabled.add(controller)
        return cls(root, frozenset(enabled))

    # -- watchers and their leaves -----------------------------------------------------------------

    def watcher_dir(self, name: str) -> Path:
        path = self.root / f"watcher-{name}"
        path.mkdir(exist_ok=True)
        return path

    def apply_limits(self, name: str, limits: Mapping[str, str]) -> list[str]:
        """Write limit files (e.g. memory.max: "512M"); the errors, as messages."""
        errors = []
        directory = self.watcher_dir(name)
        for filename, value in limits.items():
            controller = filename.partition(".")[0]
            if controller not in self.controllers:
                errors.append(f"{filename}: the {controller} controller is not available here")
                continue
            try:
                _write(directory / filename, value)
            except OSError as exc:
                errors.append(f"{filename} = {value}: {exc.strerror or exc}")
        return errors

    def new_leaf(self, name: str, wid: int, spawn_id: int) -> Path:
        leaf = self.watcher_dir(name) / f"wid-{wid}-{spawn_id}"
        leaf.mkdir(exist_ok=True)
        return leaf

    def remove_leaf(self, leaf: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            try:
                leaf.rmdir()
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise

    def remove_watcher(self, name: str) -> None:
        directory = self.root / f"watcher-{name}"
        if not directory.is_dir():
            return
        for leaf in directory.iterdir():
            if leaf.is_dir():
                self.remove_leaf(leaf)
        self.remove_leaf(directory)

    # -- what is in a leaf -------------------------------------------------------------------------

    @staticmethod
    def pids(cgroup: Path) -> list[int]:
        try:
            return [int(p) for p in _read(cgroup / "cgroup.procs").split()]
        except FileNotFoundError:
            return []

    @staticmethod
    def populated(cgroup: Path) -> bool:
        try:
            return parse_flat_keyed(_read(cgroup / "cgroup.events")).get("populated", 0) == 1
        except FileNotFoundError:
            return False

    def signal(self, cgroup: Path, signum: int) -> None:
        for pid in self.pids(cgroup):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def kill(self, cgroup: Path) -> None:
        """SIGKILL the whole subtree, race-free against forks (cgroup.kill, Linux >= 5.14)."""
        try:
            _write(cgroup / "cgroup.kill", "1")
        except FileNotFoundError:
            # Older kernels: signal what is there (a fork in between may escape).
            self.signal(cgroup, signal.SIGKILL)

    def freeze(self, name: str, frozen: bool) -> None:
        _write(self.watcher_dir(name) / "cgroup.freeze", "1" if frozen else "0")

    # -- accounting ----------------------------------------------------------------------------

    def memory_events(self, name: str) -> dict[str, int]:
        try:
            return parse_flat_keyed(_read(self.root / f"watcher-{name}" / "memory.events"))
        except FileNotFoundError:
            return {}

    def stats(self, name: str) -> dict[str, int]:
        """memory.current/peak, cpu usage and throttling, pids.current, from the kernel."""
        directory = self.root / f"watcher-{name}"
        figures: dict[str, int] = {}
        for filename in ("memory.current", "memory.peak", "pids.current"):
            with contextlib.suppress(OSError, ValueError):
                figures[filename.replace(".", "_")] = int(_read(directory / filename))
        with contextlib.suppress(OSError):
            cpu = parse_flat_keyed(_read(directory / "cpu.stat"))
            for key in ("usage_usec", "nr_throttled", "throttled_usec"):
                if key in cpu:
                    figures[f"cpu_{key}"] = cpu[key]
        return figures


def limits_of(config: WatcherConfig) -> dict[str, str]:
    """The cgroup files a watcher's options ask for (only those set)."""
    files = {
        "memory.max": config.memory_max,
        "memory.high": config.memory_high,
        "memory.swap.max": config.memory_swap_max,
        "cpu.max": config.cpu_max,
        "cpu.weight": config.cpu_weight,
        "io.weight": f"default {config.io_weight}" if config.io_weight else None,
        "pids.max": config.pids_max,
        "memory.oom.group": "1" if config.oom_group else None,
    }
    return {name: value for name, value in files.items() if value is not None}
