"""The arbiter's use of cgroups: a leaf per process, its emptiness as the end of the process,
the watcher's limits and OOM kills. Event-driven through inotify on cgroupfs files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from circus_sd.cgroups import Cgroups, limits_of
from circus_sd.config.model import WatcherConfig
from circus_sd.inotify import Inotify
from circus_sd.journal_log import about
from circus_sd.message_ids import MessageId

log = logging.getLogger("circus_sd.cgroups")


class CgroupSupervision:
    """Tracks which leaf holds which process and tells the arbiter when a leaf is empty."""

    def __init__(
        self,
        cgroups: Cgroups,
        on_empty: Callable[[int], None],
        on_oom: Callable[[str, int], None],
    ) -> None:
        self.cgroups = cgroups
        self._on_empty = on_empty
        self._on_oom = on_oom
        self._inotify = Inotify()
        self._pending: dict[tuple[str, int], Path] = {}
        self.leaves: dict[int, Path] = {}
        self._leaf_watches: dict[int, int] = {}  # inotify wd -> pid
        self._memory_watches: dict[int, str] = {}  # inotify wd -> watcher name
        self._watched_watchers: dict[str, int] = {}
        self._oom_kills: dict[str, int] = {}
        # Processes whose main pid was reaped while their leaf still held descendants.
        self.draining: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._inotify.fd, self._on_inotify)

    # -- watchers --------------------------------------------------------------------------------

    def configure(self, config: WatcherConfig) -> list[str]:
        """Create the watcher's cgroup, write its limits, watch its memory events; errors."""
        name = config.name
        directory = self.cgroups.watcher_dir(name)
        errors = self.cgroups.apply_limits(name, limits_of(config))
        if name not in self._watched_watchers and (directory / "memory.events").exists():
            wd = self._inotify.add_watch(str(directory / "memory.events"))
            self._watched_watchers[name] = wd
            self._memory_watches[wd] = name
            self._oom_kills[name] = self.cgroups.memory_events(name).get("oom_kill", 0)
        return errors

    def remove(self, name: str) -> None:
        wd = self._watched_watchers.pop(name, None)
        if wd is not None:
            self._memory_watches.pop(wd, None)
            self._inotify.remove_watch(wd)
        with contextlib.suppress(OSError):
            self.cgroups.remove_watcher(name)

    def freeze(self, name: str, frozen: bool) -> None:
        self.cgroups.freeze(name, frozen)

    # -- processes -------------------------------------------------------------------------------

    def prepare(self, name: str, wid: int, spawn_id: int) -> str:
        leaf = self.cgroups.new_leaf(name, wid, spawn_id)
        self._pending[(name, spawn_id)] = leaf
        return str(leaf)

    def discard(self, name: str, spawn_id: int) -> None:
        leaf = self._pending.pop((name, spawn_id), None)
        if leaf is not None:
            self.cgroups.remove_leaf(leaf)

    def claimed(self, name: str, spawn_id: int, pid: int) -> None:
        leaf = self._pending.pop((name, spawn_id), None)
        if leaf is None:
            return
        self.leaves[pid] = leaf
        self._leaf_watches[self._inotify.add_watch(str(leaf / "cgroup.events"))] = pid

    def main_exited(self, pid: int, stopping: bool) -> bool:
        """The main process was reaped: True if its leaf still holds processes (wait for it).

        A worker that died on its own takes its leftovers with it (cgroup.kill); one being
        stopped leaves them its graceful time (the watcher's SIGKILL timer escalates).
        """
        leaf = self.leaves.get(pid)
        if leaf is None or not self.cgroups.populated(leaf):
            self._release(pid)
            return False
        self.draining.add(pid)
        if not stopping:
            # The leaf is watcher-<name>/wid-<n>-<k> (cgroups.py).
            watcher = leaf.parent.name.removeprefix("watcher-")
            log.info("killing what pid %d left in %s", pid, leaf.name,
                     extra=about(MessageId.ORPHAN_KILLED, watcher, pid=pid))
            self.cgroups.kill(leaf)
        return True

    def signal(self, pid: int, signum: int, tree: bool) -> bool:
        """Signal a process's leaf (tree) when we have one; False: not ours to handle."""
        leaf = self.leaves.get(pid)
        if leaf is None:
            return False
        if signum == signal.SIGKILL and tree:
            self.cgroups.kill(leaf)
        elif tree or pid in self.draining:
            self.cgroups.signal(leaf, signum)
        else:
            return False
        return True

    def adopt_leaf(self, name: str, pid: int, cgroup: str) -> None:
        """Watch the leaf of a process a previous arbiter left (adoption.py), if it is one of
        this watcher's leaves (`cgroup` is from /proc/PID/cgroup)."""
        leaf = self.cgroups.watcher_dir(name) / Path(cgroup).name
        if Path(cgroup).parent.name == leaf.parent.name and pid in self.cgroups.pids(leaf):
            self.resume({pid: str(leaf)}, [])

    # -- re-execution ----------------------------------------------------------------------------

    def hold(self) -> None:
        """Stop reading leaf events (a re-execution): the next program reads the leaves."""
        if self._loop is not None:
            self._loop.remove_reader(self._inotify.fd)

    def carry(self) -> tuple[dict[int, str], list[int]]:
        """Each process's leaf and those draining."""
        return {pid: str(leaf) for pid, leaf in self.leaves.items()}, sorted(self.draining)

    def resume(self, leaves: dict[int, str], draining: list[int]) -> None:
        """Watch the leaves a previous program of this arbiter watched; a draining one that
        emptied meanwhile is reported at once."""
        for pid, path in leaves.items():
            leaf = self.leaves[pid] = Path(path)
            self._leaf_watches[self._inotify.add_watch(str(leaf / "cgroup.events"))] = pid
        self.draining.update(draining)
        for pid in draining:
            emptied = self.leaves.get(pid)
            if emptied is not None and not self.cgroups.populated(emptied) and self._loop:
                self._loop.call_soon(self._empty_now, pid)

    def _empty_now(self, pid: int) -> None:
        if pid in self.draining:
            self._release(pid)
            self._on_empty(pid)

    def _release(self, pid: int) -> None:
        self.draining.discard(pid)
        leaf = self.leaves.pop(pid, None)
        for wd, owner in list(self._leaf_watches.items()):
            if owner == pid:
                del self._leaf_watches[wd]
                self._inotify.remove_watch(wd)
        if leaf is not None:
            self.cgroups.remove_leaf(leaf)

    def _on_inotify(self) -> None:
        for wd in self._inotify.read():
            pid = self._leaf_watches.get(wd)
            if pid is not None:
                leaf = self.leaves.get(pid)
                if pid in self.draining and leaf is not None and not self.cgroups.populated(leaf):
                    self._release(pid)
                    self._on_empty(pid)
                continue
            name = self._memory_watches.get(wd)
            if name is not None:
                count = self.cgroups.memory_events(name).get("oom_kill", 0)
                if count > self._oom_kills.get(name, 0):
                    self._on_oom(name, count - self._oom_kills.get(name, 0))
                self._oom_kills[name] = count

    def close(self) -> None:
        for pid in list(self.leaves):
            self._release(pid)
        if self._loop is not None:
            self._loop.remove_reader(self._inotify.fd)
        self._inotify.close()
