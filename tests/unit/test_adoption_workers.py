"""Which processes a new arbiter takes over from one that died without a handover
(adoption.workers): its own marked workers, never their children, nor another arbiter's."""

from __future__ import annotations

from circus_sd.adoption import Found, Seen, workers

FILE = "/etc/circus-sd/circus.ini"


def marked(pid: int, ppid: int, started: int, watcher: str, wid: int, **more: object) -> Seen:
    fields: dict[str, object] = {"session": pid, "arbiter": FILE, "cgroup": None} | more
    return Seen(pid, ppid, started, watcher=watcher, wid=wid, **fields)  # type: ignore[arg-type]


def test_each_worker_is_found_by_its_watcher_and_wid() -> None:
    seen = [
        Seen(1, 0, 1, 1),
        marked(100, 1, 50, "web", 1),
        marked(101, 1, 51, "web", 2),
        marked(200, 1, 52, "db", 1, cgroup="/circus-sd.service/watcher-db/wid-1-1"),
    ]
    assert workers(seen, FILE) == {
        ("web", 1): Found(100, "web", 1, 50, None),
        ("web", 2): Found(101, "web", 2, 51, None),
        ("db", 1): Found(200, "db", 1, 52, "/circus-sd.service/watcher-db/wid-1-1"),
    }


def test_a_pre_fork_servers_children_are_not_workers() -> None:
    # gunicorn's master and its workers: all inherit the marks, only the master was spawned.
    seen = [
        marked(100, 1, 50, "web", 1),
        marked(110, 100, 60, "web", 1, session=100),
        marked(111, 100, 61, "web", 1, session=100),
    ]
    assert list(workers(seen, FILE).values()) == [Found(100, "web", 1, 50, None)]


def test_a_daemon_that_left_the_tree_is_not_the_worker() -> None:
    # Double fork without setsid: reparented, still in the worker's session.
    kept_session = [marked(100, 1, 50, "web", 1), marked(120, 1, 70, "web", 1, session=100)]
    assert workers(kept_session, FILE)[("web", 1)].pid == 100
    # With setsid: a session of its own; the worker, older, is still the one taken.
    own_session = [marked(130, 1, 80, "web", 1), marked(100, 1, 50, "web", 1)]
    assert workers(own_session, FILE)[("web", 1)].pid == 100
    # The worker died: a daemon in its session is not taken for it.
    assert workers([marked(120, 1, 70, "web", 1, session=100)], FILE) == {}


def test_another_arbiters_processes_and_unmarked_ones_are_left_alone() -> None:
    seen = [
        marked(100, 1, 50, "web", 1, arbiter="/srv/other/circus.ini"),
        Seen(101, 1, 51, 101, arbiter=FILE, watcher="web", wid=None),  # CIRCUS_WID altered
        Seen(102, 1, 52, 102),
    ]
    assert workers(seen, FILE) == {}
