"""The reload plan: what a reload does, read from two versions of a config file."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Collection
from pathlib import Path

from circus_sd.config import load_config
from circus_sd.config.model import Config
from circus_sd.reload_plan import (
    AddWatcher,
    ChangeWatcher,
    CloseSocket,
    RebindSocket,
    RemoveWatcher,
    StartAfterSocket,
    Step,
    StopForSocket,
    plan,
)
from circus_sd.sockets import SocketChanges

ENV = {"PATH": os.defpath}


def config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "circus.ini"
    path.write_text(textwrap.dedent(text))
    loaded, _warnings = load_config(str(path), ENV)
    return loaded


def steps(
    tmp_path: Path,
    old: str,
    new: str,
    sockets: SocketChanges | None = None,
    wanted_up: Collection[str] | None = None,
) -> list[Step]:
    before, after = config(tmp_path, old), config(tmp_path, new)
    up = {w.name for w in before.watchers} if wanted_up is None else wanted_up
    return plan(before, after, sockets or SocketChanges(), up)


def names(found: list[Step]) -> list[tuple[str, str]]:
    """(kind, name) of each step, in order."""
    result = []
    for step in found:
        name = step.config.name if isinstance(step, (ChangeWatcher, AddWatcher)) else step.name
        result.append((type(step).__name__, name))
    return result


def test_an_unchanged_file_does_nothing(tmp_path: Path) -> None:
    text = """
        [watcher:web]
        cmd = sleep 60
    """
    assert steps(tmp_path, text, text) == []


def test_removed_watchers_go_first_lowest_priority_first_and_added_ones_come_last_in_file_order(
    tmp_path: Path,
) -> None:
    old = """
        [watcher:keep]
        cmd = sleep 60
        [watcher:low]
        cmd = sleep 60
        priority = 1
        [watcher:high]
        cmd = sleep 60
        priority = 9
    """
    new = """
        [watcher:keep]
        cmd = sleep 61
        [watcher:second]
        cmd = sleep 60
        priority = 2
        [watcher:first]
        cmd = sleep 60
        priority = 5
        autostart = false
    """
    found = steps(tmp_path, old, new)
    assert names(found) == [
        ("RemoveWatcher", "low"),
        ("RemoveWatcher", "high"),
        ("ChangeWatcher", "keep"),
        ("AddWatcher", "second"),
        ("AddWatcher", "first"),
    ]
    added = {s.config.name: s.start for s in found if isinstance(s, AddWatcher)}
    assert added == {"first": False, "second": True}
    change = next(s for s in found if isinstance(s, ChangeWatcher))
    assert change.config.cmd == "sleep 61"


def test_a_changed_socket_stops_its_users_then_rebinds_then_starts_them(tmp_path: Path) -> None:
    text = """
        [socket:web]
        host = 127.0.0.1
        port = 8080
        [socket:old]
        host = 127.0.0.1
        port = 8081
        [watcher:web]
        cmd = sleep 60
        listen_fds = web
        [watcher:all]
        cmd = sleep 60
        use_sockets = true
        [watcher:other]
        cmd = sleep 60
        [watcher:down]
        cmd = sleep 60
        listen_fds = web
    """
    found = steps(
        tmp_path,
        text,
        text,
        SocketChanges(changed=("web",), removed=("old",)),
        wanted_up={"web", "all", "other"},
    )
    # "down" is stopped by its operator: it is not started because a socket changed.
    assert found == [
        StopForSocket("web"),
        StopForSocket("all"),
        RebindSocket("web"),
        CloseSocket("old"),
        StartAfterSocket("web"),
        StartAfterSocket("all"),
    ]


def test_a_watcher_removed_by_a_command_since_is_not_removed_again(tmp_path: Path) -> None:
    old = """
        [watcher:a]
        cmd = sleep 60
        [watcher:b]
        cmd = sleep 60
    """
    new = """
        [watcher:a]
        cmd = sleep 60
    """
    before, after = config(tmp_path, old), config(tmp_path, new)
    assert plan(before, after, SocketChanges(), {"a"}, running={"a"}) == []
    assert plan(before, after, SocketChanges(), {"a", "b"}) == [RemoveWatcher("b")]
