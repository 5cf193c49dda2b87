"""Per-process NOTIFY_SOCKETs: modes and owners, and reachability for other users' processes."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from circus_sd.child_notify import NotifySockets

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def _mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_sockets_are_0600_in_a_0711_directory_and_a_private_parent_stays_private(
    tmp_path: Path,
) -> None:
    parent = tmp_path / "run"
    parent.mkdir(mode=0o700)
    sockets = NotifySockets(str(parent))
    try:
        own = sockets.open("web", 1, None, None)
        try:
            assert _mode(own.path) == 0o600 and os.stat(own.path).st_uid == os.geteuid()
            assert _mode(os.path.dirname(own.path)) == 0o711
            assert _mode(parent) == 0o700, "nobody else needs to get in"
        finally:
            own.close()
    finally:
        sockets.close()


@needs_root
def test_a_process_of_another_user_can_reach_its_socket_through_a_private_parent(
    tmp_path: Path,
) -> None:
    """The runtime directory is also the control sockets' one, 0700 outside systemd: a process
    running as `nobody` could not reach its own socket inside. Traversal is added, nothing else."""
    tmp_path.chmod(0o755)
    parent = tmp_path / "run"
    parent.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody")
    sockets = NotifySockets(str(parent))
    try:
        theirs = sockets.open("web", 1, nobody.pw_uid, nobody.pw_gid)
        try:
            assert os.stat(theirs.path).st_uid == nobody.pw_uid and _mode(theirs.path) == 0o600
            assert _mode(parent) == 0o711
        finally:
            theirs.close()
    finally:
        sockets.close()
    assert not any(parent.iterdir()), "the sockets' directory is removed at close"
