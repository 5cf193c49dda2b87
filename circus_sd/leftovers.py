"""Orphans the arbiter adopted (as child subreaper), told apart by the worker session they are in.

Without cgroups, a daemon that a worker double-forked ends up as the arbiter's child, and nothing
in the kernel says which worker it came from. Each worker leads its own session (the spawner
calls setsid), so its session id is its pid, and the daemon keeps that session unless it calls
setsid itself: `os.getsid(orphan)` names the worker, and so the watcher, it came from. The kernel
keeps a session's number allocated while any process is in it, so a recorded session id cannot
name another session before the last of its processes is gone. A daemon that started a session
of its own is not attributed (it is stopped with the other orphans when the arbiter exits):
cgroups (Delegate=yes) are the complete answer.

Also here: telling apart the children a lost spawner cloned and never answered for
(`clones_of_a_lost_spawner`).

No I/O here beyond the injected `session_of`, `open_pidfd` and `started` (whose default reads
/proc/PID/stat): the arbiter feeds it its children.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Callable, Collection, Iterable

from circus_sd.process import CLOCK_TICKS, start_ticks


@dataclasses.dataclass(frozen=True)
class Leftover:
    """An adopted orphan attributed to a watcher; `pidfd` keeps its identity until it is gone."""

    pid: int
    session: int
    watcher: str
    pidfd: int

    def send_signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, signum)


class Leftovers:
    """Worker sessions (session id -> watcher), and the orphans found in them, by pid."""

    def __init__(
        self,
        session_of: Callable[[int], int] = os.getsid,
        open_pidfd: Callable[[int], int] = os.pidfd_open,
        close: Callable[[int], None] = os.close,
    ) -> None:
        self._session_of = session_of
        self._open_pidfd = open_pidfd
        self._close = close
        self._sessions: dict[int, str] = {}
        self._found: dict[int, Leftover] = {}

    @property
    def sessions(self) -> dict[int, str]:
        """Session leader -> watcher (carried across a re-execution)."""
        return dict(self._sessions)

    def adopt_sessions(self, sessions: dict[int, str]) -> None:
        self._sessions.update(sessions)

    def session_started(self, leader: int, watcher: str) -> None:
        """A worker of `watcher` runs as `leader`, leading its own session."""
        self._sessions[leader] = watcher

    def scan(self, candidates: Iterable[int], leaders: Collection[int]) -> list[Leftover]:
        """Attribute the orphans among `candidates` (our children that are neither workers nor
        the spawner); the newly attributed. `leaders`: pids of the live workers.

        Call it only with children we have not reaped (their pids cannot have been reused). A
        session whose leader is gone and which holds none of our children is forgotten.
        """
        new: list[Leftover] = []
        occupied = {leftover.session for leftover in self._found.values()}
        for pid in candidates:
            if pid in self._found:
                continue
            try:
                session = self._session_of(pid)
            except OSError:
                continue
            occupied.add(session)
            # A session leader is never a worker's leftover: it is a worker itself, not exec'd
            # yet (whose pid we learn later), or a daemon that made a session of its own.
            watcher = self._sessions.get(session)
            if watcher is None or session == pid:
                continue
            try:
                pidfd = self._open_pidfd(pid)
            except OSError:
                continue
            leftover = Leftover(pid, session, watcher, pidfd)
            self._found[pid] = leftover
            new.append(leftover)
        for session in [s for s in self._sessions if s not in leaders and s not in occupied]:
            del self._sessions[session]
        return new

    def of(self, watcher: str) -> list[Leftover]:
        return [leftover for leftover in self._found.values() if leftover.watcher == watcher]

    def pids(self, watcher: str) -> frozenset[int]:
        return frozenset(leftover.pid for leftover in self.of(watcher))

    def get(self, pid: int) -> Leftover | None:
        return self._found.get(pid)

    def gone(self, pid: int) -> Leftover | None:
        """The orphan `pid` exited (or is no longer ours): forgotten, its pidfd closed (take it
        out of the event loop first)."""
        leftover = self._found.pop(pid, None)
        if leftover is not None:
            self._close(leftover.pidfd)
        return leftover

    def forget_sessions(self, watcher: str) -> None:
        """Orphans of `watcher`'s workers are no longer to be attributed to it (`rm --nostop`,
        a removed watcher). Those found already stay until `gone`."""
        for session in [s for s, name in self._sessions.items() if name == watcher]:
            del self._sessions[session]

    def found(self) -> list[Leftover]:
        return list(self._found.values())


# -- children of a lost spawner ------------------------------------------------------------------

def clones_of_a_lost_spawner(
    candidates: Iterable[int],
    since: float,
    own_session: int,
    session_of: Callable[[int], int] = os.getsid,
    started: Callable[[int], int] = start_ticks,
) -> list[tuple[int, bool]]:
    """Among `candidates` (our children that are neither known processes, nor spawners, nor
    attributed orphans), those a lost spawner may have cloned for requests it did not answer,
    each with whether it leads its own session; `since`: when (CLOCK_BOOTTIME seconds) the first
    of those requests was sent to it (it cloned for them after that).

    Such a child, started with CLONE_PARENT, is ours, and we never learned its pid: it would
    run unsupervised beside the replacement the watcher spawns. It started after `since`, and
    it leads its own session (the spawner's children call setsid), or, not that far yet, is
    still in ours (the spawner's). An orphan adopted from a worker is in its worker's session
    (Leftovers attributes it), or leads a session of its own: only one that was also forked
    in those few seconds is taken for a clone. Call it once the lost spawner is gone (none of
    its clones is missing) and before another clones anything.
    """
    threshold = int(since * CLOCK_TICKS)
    found = []
    for pid in candidates:
        try:
            session = session_of(pid)
            if started(pid) < threshold:
                continue
        except (OSError, ValueError, IndexError):
            continue  # gone (or reaped) already
        if session in (pid, own_session):
            found.append((pid, session == pid))
    return found
