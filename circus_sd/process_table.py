"""One record per live child of a watcher: all the arbiter holds for it, forgotten in one step."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator, KeysView

from circus_sd.child_notify import NotifySocket
from circus_sd.process import ProcessHandle


class ExecPhase(enum.Enum):
    """How far a child is from being the program it was spawned for."""

    # A copy of the spawner until its exec-status pipe says otherwise: its watcher has not
    # heard of it, and nothing signals it (the copy swallows TERM, INT, HUP and QUIT).
    CLONED = "cloned"
    # Its program runs; its watcher knows it.
    EXECED = "execed"
    # Its main pid was reaped while its cgroup leaf still held descendants: it ends when the
    # leaf is empty, with the exit kept here.
    DRAINING = "draining"


@dataclasses.dataclass
class ProcessEntry:
    pid: int
    watcher: str
    spawn_id: int
    handle: ProcessHandle
    # Wall-clock start, for `status --details` and the uptime clients show.
    started_wall: float
    # Its sd_notify socket, for watchers with `notify`.
    notify: NotifySocket | None = None
    phase: ExecPhase = ExecPhase.CLONED
    # Kept while DRAINING: the main pid's exit code and what its exec-status pipe said.
    exit_code: int | None = None
    exec_error: str | None = None


class ProcessTable:
    """The live children of watchers, by pid."""

    def __init__(self) -> None:
        self._entries: dict[int, ProcessEntry] = {}

    def add(self, entry: ProcessEntry) -> None:
        self._entries[entry.pid] = entry

    def get(self, pid: int) -> ProcessEntry | None:
        return self._entries.get(pid)

    def remove(self, pid: int) -> ProcessEntry | None:
        return self._entries.pop(pid, None)

    def owner(self, pid: int) -> str | None:
        """The watcher the process belongs to."""
        entry = self._entries.get(pid)
        return entry.watcher if entry is not None else None

    def pids(self) -> KeysView[int]:
        return self._entries.keys()

    def __contains__(self, pid: object) -> bool:
        return pid in self._entries

    def __iter__(self) -> Iterator[ProcessEntry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)
