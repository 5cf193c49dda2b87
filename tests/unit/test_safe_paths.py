"""safe_paths: which directories and links are trusted; files owned by `nobody` stand in for
another user's (the attacks themselves, by a real user: integration/test_hostile_paths.py).
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from circus_sd import safe_paths
from circus_sd.output.files import FileWriter, TimeRotation
from circus_sd.output.sink import Chunk, Origin

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chowns files to another user")

NOBODY = pwd.getpwnam("nobody").pw_uid


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A directory only root may change (tmp_path's parents are root's)."""
    tmp_path.chmod(0o755)
    return tmp_path


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def test_links_that_only_root_could_have_made_are_followed(base: Path) -> None:
    """As /var/run -> /run: a link in a directory only root may change; `..` too."""
    (base / "real" / "logs").mkdir(parents=True)
    (base / "alias").symlink_to(base / "real")
    (base / "relative").symlink_to("real/logs/..")
    assert _fd_path(safe_paths.open_directory(str(base / "alias" / "logs"))) == str(
        base / "real" / "logs"
    )
    assert _fd_path(safe_paths.open_directory(str(base / "relative" / "logs"))) == str(
        base / "real" / "logs"
    )


def test_a_directory_another_user_may_change_is_refused_wherever_it_is_on_the_path(
    base: Path,
) -> None:
    home = base / "home"
    (home / "logs").mkdir(parents=True)
    os.chown(home, NOBODY, -1)
    for path in (home, home / "logs"):
        with pytest.raises(safe_paths.UnsafePath) as caught:
            safe_paths.open_directory(str(path))
        assert str(caught.value).startswith(f"{home} belongs to user nobody (uid {NOBODY})")
        assert caught.value.directory == str(home)
    os.chown(home, 0, -1)
    home.chmod(0o775)
    os.chown(home, -1, 100)  # a group other than root's may write
    assert "is writable by group" in str(safe_paths.directory_problem(str(home / "logs")))
    home.chmod(0o757)
    assert "is writable by every user" in str(safe_paths.directory_problem(str(home / "logs")))


def test_a_sticky_directory_is_gone_through_only_by_entries_of_root_or_ours(base: Path) -> None:
    shared = base / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "mine").mkdir()
    (shared / "theirs").mkdir()
    os.chown(shared / "theirs", NOBODY, -1)
    (shared / "their-link").symlink_to(base)
    os.chown(shared / "their-link", NOBODY, -1, follow_symlinks=False)

    assert safe_paths.directory_problem(str(shared / "mine")) is None
    assert safe_paths.directory_problem(str(shared)) is None  # files in it are checked
    for name in ("theirs", "their-link"):
        problem = safe_paths.directory_problem(str(shared / name))
        assert problem is not None
        assert problem.startswith(f"{shared / name} belongs to user nobody (uid {NOBODY}), in")
    with pytest.raises(safe_paths.UnsafePath, match="is writable by every user"):
        safe_paths.ensure_directory(str(shared), 0o700)  # never for sockets


def test_files_are_never_opened_through_a_link(base: Path) -> None:
    target = base / "target"
    target.write_text("root's\n")
    (base / "link").symlink_to(target)
    dir_fd = safe_paths.open_directory(str(base))
    try:
        with pytest.raises(safe_paths.UnsafePath, match="is a symbolic link"):
            safe_paths.open_file(dir_fd, "link", os.O_WRONLY | os.O_CREAT, 0o644,
                                 str(base / "link"))
    finally:
        os.close(dir_fd)
    assert target.read_text() == "root's\n"


def test_in_a_sticky_directory_a_file_of_another_user_or_with_another_link_is_refused(
    base: Path,
) -> None:
    shared = base / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "theirs.log").touch()
    os.chown(shared / "theirs.log", NOBODY, -1)
    (base / "root-file").write_text("root's\n")
    os.link(base / "root-file", shared / "linked.log")  # as if protected_hardlinks were off
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    with pytest.raises(safe_paths.UnsafePath, match="belongs to user nobody"):
        safe_paths.open_path(str(shared / "theirs.log"), flags, 0o644)
    with pytest.raises(safe_paths.UnsafePath, match="has another hard link"):
        safe_paths.open_path(str(shared / "linked.log"), flags, 0o644)
    os.close(safe_paths.open_path(str(shared / "mine.log"), flags, 0o644))
    assert (base / "root-file").read_text() == "root's\n"


def test_a_directory_made_here_has_exactly_its_mode_whatever_the_umask(
    base: Path, umask_077: None
) -> None:
    target = base / "a" / "b" / "run"
    safe_paths.ensure_directory(str(target), 0o750, group=100)
    info = target.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o750, 100)
    assert stat.S_IMODE((base / "a").stat().st_mode) == 0o700  # above: 0755 minus the umask
    target.chmod(0o700)
    safe_paths.ensure_directory(str(target), 0o750)  # an existing one is only checked
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_time_rotation_removes_only_its_own_old_files(base: Path) -> None:
    """In a sticky directory, another user's file named like a backup is not counted nor
    removed (root could remove it there)."""
    shared = base / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    theirs = shared / "out.log.20000101"
    theirs.write_text("theirs\n")
    os.chown(theirs, NOBODY, -1)
    for day in ("20000102", "20000103"):
        (shared / f"out.log.{day}").write_text("old\n")
    now = [1_000_000_000.0]
    writer = FileWriter(str(shared / "out.log"), TimeRotation("D", 1, 1, True),
                        clock=lambda: now[0])
    origin = Origin("web", 1, 100, "stdout")
    writer.write([Chunk([b"1\n"], 2, origin)])
    now[0] += 2 * 86400
    writer.write([Chunk([b"2\n"], 2, origin)])
    writer.close()
    names = sorted(p.name for p in shared.iterdir())
    assert theirs.name in names, names
    assert "out.log.20000102" not in names and "out.log.20000103" not in names, names
