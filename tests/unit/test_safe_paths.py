"""safe_paths: which directories and links are trusted; files owned by `nobody` stand in for
another user's (the attacks themselves, by a real user: integration/test_hostile_paths.py).
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from circus_sd import safe_paths
from circus_sd.output.files import FileWriter, SizeRotation, TimeRotation
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
    os.chown(home, -1, 100)  # a group other than root's may write: only where the file is
    assert "is writable by group" in str(safe_paths.directory_problem(str(home)))
    home.chmod(0o757)
    assert "is writable by every user" in str(safe_paths.directory_problem(str(home / "logs")))


def test_above_the_files_directory_a_group_may_write_as_ubuntus_var_log(base: Path) -> None:
    """logrotate's rule: /var/log root:syslog 0775 is gone through; the directory that holds
    the file must still be root's alone, and a link in the group's directory is not followed
    (any member could have made it)."""
    var_log = base / "var-log"
    (var_log / "myapp").mkdir(parents=True)
    var_log.chmod(0o775)
    os.chown(var_log, 0, 100)
    assert safe_paths.directory_problem(str(var_log / "myapp")) is None
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    os.close(safe_paths.open_path(str(var_log / "myapp" / "app.log"), flags, 0o644))
    problem = safe_paths.directory_problem(str(var_log))  # where a file directly in it is
    assert problem is not None and f"{var_log} is writable by group" in problem
    (var_log / "alias").symlink_to(var_log / "myapp")
    problem = safe_paths.directory_problem(str(var_log / "alias"))
    assert problem is not None and f"{var_log / 'alias'} is a symbolic link in {var_log}" in problem
    var_log.chmod(0o777)  # writable by every user, not sticky: not even on the way
    problem = safe_paths.directory_problem(str(var_log / "myapp"))
    assert problem is not None and f"{var_log} is writable by every user" in problem
    var_log.chmod(0o1777)  # sticky, as /tmp: on the way, entries of root's only
    assert safe_paths.directory_problem(str(var_log / "myapp")) is None


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
        safe_paths.ensure_directory(str(shared), 0o700)  # not where that is not asked for
    safe_paths.ensure_directory(str(shared), 0o700, shared_ok=True)  # ipc:///tmp/x.sock
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777  # left as it is


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


def _open_following(path: Path) -> safe_paths.Opened:
    dir_fd = safe_paths.open_directory(str(path.parent))
    try:
        return safe_paths.open_following(
            dir_fd, path.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644, str(path)
        )
    finally:
        os.close(dir_fd)


def _close(opened: safe_paths.Opened) -> None:
    os.close(opened.fd)
    if opened.dir_fd >= 0:
        os.close(opened.dir_fd)


def test_a_log_files_own_link_is_followed_only_where_nobody_else_could_have_made_it(
    base: Path,
) -> None:
    """An admin's current.log -> app-2026.log in root's directory: the target is the file (its
    directory and name, for rotation). In a sticky directory, or through a directory another
    user owns, refused; a loop ends."""
    (base / "logs").mkdir()
    (base / "logs" / "current.log").symlink_to("app-2026.log")
    opened = _open_following(base / "logs" / "current.log")
    try:
        assert opened.linked and opened.name == "app-2026.log"
        assert opened.path == str(base / "logs" / "app-2026.log")
        assert _fd_path(os.dup(opened.dir_fd)) == str(base / "logs")
    finally:
        _close(opened)
    assert (base / "logs" / "app-2026.log").is_file()

    home = base / "home"
    home.mkdir()
    os.chown(home, NOBODY, -1)
    (base / "logs" / "theirs.log").symlink_to(home / "x.log")
    with pytest.raises(safe_paths.UnsafePath, match=f"{home} belongs to user nobody"):
        _open_following(base / "logs" / "theirs.log")
    assert not (home / "x.log").exists()

    shared = base / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "mine.log").symlink_to(base / "logs" / "app-2026.log")  # root's, yet not followed
    with pytest.raises(safe_paths.LinkRefused, match="is a symbolic link"):
        _open_following(shared / "mine.log")

    (base / "logs" / "loop.log").symlink_to("loop.log")
    with pytest.raises(OSError) as caught:
        _open_following(base / "logs" / "loop.log")
    assert caught.value.errno == errno.ELOOP


def test_dev_stdout_leads_to_what_the_arbiters_stdout_is(base: Path) -> None:
    """/dev/stdout -> /proc/self/fd/1 -> pipe:[...]: opened by the kernel from /proc, whatever
    the link's text; no name to rotate."""
    read_end, write_end = os.pipe()
    saved = os.dup(1)
    os.dup2(write_end, 1)
    try:
        opened = _open_following(Path("/dev/stdout"))
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(write_end)
    try:
        assert opened.linked and opened.dir_fd == -1
        assert stat.S_ISFIFO(os.fstat(opened.fd).st_mode)
        os.write(opened.fd, b"through /dev/stdout\n")
        os.close(opened.fd)
        assert os.read(read_end, 100) == b"through /dev/stdout\n"
    finally:
        os.close(read_end)
    assert safe_paths.file_problem("/dev/stdout") is None


def test_file_problem_says_what_open_following_would_refuse(base: Path) -> None:
    (base / "logs").mkdir()
    (base / "logs" / "current.log").symlink_to("app.log")
    assert safe_paths.file_problem(str(base / "logs" / "current.log")) is None
    problem = safe_paths.file_problem(str(base / "logs" / "current.log"), follow=False)
    assert problem is not None and "is a symbolic link" in problem
    shared = base / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    (base / "logs" / "to-shared.log").symlink_to(shared / "x.log")
    assert safe_paths.file_problem(str(base / "logs" / "to-shared.log")) is None
    problem = safe_paths.file_problem(str(base / "logs" / "to-shared.log"), shared_ok=False)
    assert problem is not None and f"{shared} is writable by every user" in problem


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


def test_a_link_to_a_fifo_is_appended_to_and_never_rotated(
    base: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As stdout_stream.filename = /dev/stdout in a container: a link, in root's directory, to a
    FIFO read here. Size rotation would rename the FIFO (or the link): it is off, said once."""
    fifo = base / "fifo"
    os.mkfifo(fifo)
    (base / "stdout").symlink_to(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = FileWriter(str(base / "stdout"), SizeRotation(10, 2), check_interval=0)
    origin = Origin("web", 1, 100, "stdout")
    try:
        for line in (b"first line\n", b"second line\n"):
            writer.write([Chunk([line], len(line), origin)])
        assert os.read(reader, 100) == b"first line\nsecond line\n"
    finally:
        writer.close()
        os.close(reader)
    assert sorted(p.name for p in base.iterdir()) == ["fifo", "stdout"]
    warned = [r.getMessage() for r in caplog.records if "never rotated" in r.getMessage()]
    assert len(warned) == 1 and "a device or a pipe" in warned[0], warned


def test_rotation_through_an_admins_link_rotates_the_file_it_leads_to(base: Path) -> None:
    (base / "current.log").symlink_to("app-2026.log")
    writer = FileWriter(str(base / "current.log"), SizeRotation(12, 2), check_interval=0)
    origin = Origin("web", 1, 100, "stdout")
    try:
        for line in (b"line one\n", b"line two\n"):
            writer.write([Chunk([line], len(line), origin)])
    finally:
        writer.close()
    assert (base / "current.log").is_symlink()
    assert (base / "app-2026.log").read_text() == "line two\n"
    assert (base / "app-2026.log.1").read_text() == "line one\n"


def test_check_warns_of_a_refused_link_not_of_dev_stdout(base: Path) -> None:
    from circus_sd.config.streams import parse_stream

    shared = base / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "out.log").symlink_to(base / "elsewhere.log")
    _, warnings = parse_stream({"class": "FileStream", "filename": "/dev/stdout"})
    assert warnings == []
    _, warnings = parse_stream({"class": "FileStream", "filename": str(shared / "out.log")})
    assert any("is a symbolic link" in text for key, text in warnings if key == "filename")
