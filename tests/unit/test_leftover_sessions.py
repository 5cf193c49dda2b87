"""Attributing adopted orphans to watchers by worker session (no process is forked), and telling
the children of a lost spawner apart (on fakes, then on real children)."""

from __future__ import annotations

import os
import subprocess
import time

from circus_sd.leftovers import Leftovers, clones_of_a_lost_spawner
from circus_sd.process import CLOCK_TICKS, start_ticks


class FakeKernel:
    """Session ids by pid, and pidfds handed out and closed."""

    def __init__(self, sessions: dict[int, int]) -> None:
        self.sessions = sessions
        self.opened: dict[int, int] = {}
        self.closed: list[int] = []

    def session_of(self, pid: int) -> int:
        if pid not in self.sessions:
            raise ProcessLookupError(pid)
        return self.sessions[pid]

    def open_pidfd(self, pid: int) -> int:
        self.opened[pid] = 1000 + pid
        return 1000 + pid

    def leftovers(self) -> Leftovers:
        return Leftovers(self.session_of, self.open_pidfd, self.closed.append)


def test_an_orphan_in_a_workers_session_is_that_watchers() -> None:
    kernel = FakeKernel({200: 100, 300: 300, 400: 1})
    leftovers = kernel.leftovers()
    leftovers.session_started(100, "web")

    found = leftovers.scan([200, 300, 400], leaders={100})

    assert [(f.pid, f.session, f.watcher, f.pidfd) for f in found] == [(200, 100, "web", 1200)]
    assert leftovers.pids("web") == {200}
    assert kernel.opened == {200: 1200}, "a pidfd for the attributed orphan only"


def test_a_session_leader_is_never_a_leftover() -> None:
    # A worker whose pid we do not know yet (in a recorded session number if that number was
    # reused), or a daemon that made a session of its own.
    kernel = FakeKernel({100: 100})
    leftovers = kernel.leftovers()
    leftovers.session_started(100, "web")

    assert leftovers.scan([100], leaders=set()) == []


def test_a_found_orphan_is_not_found_again_and_gone_closes_its_pidfd() -> None:
    kernel = FakeKernel({200: 100})
    leftovers = kernel.leftovers()
    leftovers.session_started(100, "web")
    leftovers.scan([200], leaders=set())

    assert leftovers.scan([200], leaders=set()) == []
    gone = leftovers.gone(200)

    assert gone is not None and gone.pid == 200
    assert kernel.closed == [1200]
    assert leftovers.pids("web") == frozenset()
    assert leftovers.gone(200) is None


def test_a_session_is_kept_while_its_leader_or_an_orphan_is_in_it() -> None:
    kernel = FakeKernel({200: 100, 201: 100})
    leftovers = kernel.leftovers()
    leftovers.session_started(100, "web")

    leftovers.scan([], leaders={100})  # the worker runs, no orphan yet
    leftovers.scan([200], leaders=set())  # the worker exited, its daemon remains
    leftovers.gone(200)
    # The daemon's own child, adopted as the daemon exited, in the same scan as its session
    # would be found empty.
    found = leftovers.scan([201], leaders=set())

    assert [f.pid for f in found] == [201]


def test_an_empty_session_whose_leader_is_gone_is_forgotten() -> None:
    # Its number may be reused by an unrelated process: it must name no watcher then.
    kernel = FakeKernel({})
    leftovers = kernel.leftovers()
    leftovers.session_started(100, "web")
    leftovers.scan([], leaders=set())

    kernel.sessions[200] = 100
    assert leftovers.scan([200], leaders=set()) == []


def test_forgotten_sessions_attribute_nothing_and_found_orphans_stay_until_gone() -> None:
    kernel = FakeKernel({200: 100, 201: 100})
    leftovers = kernel.leftovers()
    leftovers.session_started(100, "web")
    leftovers.scan([200], leaders={100})

    leftovers.forget_sessions("web")

    assert leftovers.scan([201], leaders={100}) == []
    assert [f.pid for f in leftovers.found()] == [200]


def test_orphans_go_to_the_watcher_of_their_own_session() -> None:
    kernel = FakeKernel({200: 100, 300: 101})
    leftovers = kernel.leftovers()
    leftovers.session_started(100, "web")
    leftovers.session_started(101, "db")

    leftovers.scan([200, 300], leaders={100, 101})

    assert leftovers.pids("web") == {200}
    assert leftovers.pids("db") == {300}
    assert [f.pid for f in leftovers.of("db")] == [300]


# -- children of a lost spawner ------------------------------------------------------------------


def test_the_clones_of_a_lost_spawner_are_the_young_session_leaders_and_those_in_ours() -> None:
    """Young: started since its oldest unanswered request. A clone leads its session once past
    setsid, and is still in ours (the spawner's) before; an orphan from a worker is in that
    worker's session, or leads one of its own but was forked before."""
    sessions = {10: 10, 11: 11, 12: 500, 13: 13, 14: 77, 15: 500}
    ticks = {10: 1000, 11: 999, 12: 1005, 13: 1001, 14: 1001}  # 15: gone before it was read
    own_session = 500

    def started(pid: int) -> int:
        if pid not in ticks:
            raise FileNotFoundError(pid)
        return ticks[pid]

    found = clones_of_a_lost_spawner(
        sessions, 1000 / CLOCK_TICKS, own_session, sessions.__getitem__, started
    )

    assert found == [(10, True), (12, False), (13, True)]


def test_clones_of_a_lost_spawner_among_real_children() -> None:
    """On real processes: /proc's start time and sessions, against CLOCK_BOOTTIME."""
    sleep = ["sleep", "30"]
    before = subprocess.Popen(sleep, start_new_session=True)
    try:
        # A tick later at least: the older one started before `since`.
        time.sleep(2 / CLOCK_TICKS)
        since = time.clock_gettime(time.CLOCK_BOOTTIME)
        leader = subprocess.Popen(sleep, start_new_session=True)
        in_ours = subprocess.Popen(sleep)
        try:
            assert start_ticks(leader.pid) >= int(since * CLOCK_TICKS)
            pids = [before.pid, leader.pid, in_ours.pid]
            found = clones_of_a_lost_spawner(pids, since, os.getsid(0))
            assert found == [(leader.pid, True), (in_ours.pid, False)]
        finally:
            for child in (leader, in_ours):
                child.kill()
                child.wait(5)
        # Reaped: no longer found.
        assert clones_of_a_lost_spawner([leader.pid], since, os.getsid(0)) == []
    finally:
        before.kill()
        before.wait(5)
