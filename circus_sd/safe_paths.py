"""Reach files and directories without following a link another user could have planted.

The arbiter usually runs as root and writes where its configuration says: log files, the
pidfile, lock files, sockets. Anyone who may change the entries of a directory on that path can
replace a name with a symbolic link and make root write elsewhere (a cron.d file, an
authorized_keys). So, as logrotate does, the directory that holds a file (where it is opened,
renamed and removed) must be changeable by *trusted* users alone: root and the arbiter's own
user (group write only for group root). A sticky directory that anyone may write to (/tmp) is
fine too, as long as the entry used in it belongs to a trusted user: the kernel lets nobody
else rename or remove it.

The directories above it are held to logrotate's looser rule, not OpenSSH's StrictModes: they
must belong to a trusted user and not be writable by every user (unless sticky), but may be
writable by a group. Ubuntu's /var/log is root:syslog 0775; refusing every log under it would
drop the output of the most common setup. What a member of such a group can do there is
rearrange the entries of that directory (swap /var/log/a and /var/log/b, both root's): the
directory finally reached is still checked, the file is still opened without following a link
its members could make, and a link in such a directory is never followed on the way. Links on
the way are followed only where a trusted user alone could have made them.

The last name of a pidfile or lock file is never followed. That of a log file is
(`open_following`) when the directory holding the link is trusted (only root or the arbiter's
user could have made the link: `/dev/stdout`, an admin's `current.log -> app-2026.log`), its
target reached by this same walk, at most MAX_FINAL_LINKS times; where the directory is shared
(sticky), never.
"""

from __future__ import annotations

import dataclasses
import errno
import grp
import os
import pwd
import stat

# As the kernel's own limit on symbolic links followed while resolving one path.
MAX_LINKS = 40
# Last-name links followed in a row for a log file (/dev/stdout -> /proc/self/fd/1 -> ...).
MAX_FINAL_LINKS = 8
_PATH_FLAGS = os.O_PATH | os.O_CLOEXEC


class UnsafePath(OSError):
    """A path another user could redirect; the message names the directory and what to do.

    An OSError (EPERM), so that code handling a failed open handles this one too."""

    def __init__(self, message: str, directory: str) -> None:
        super().__init__(errno.EPERM, message)
        self.message = message
        self.directory = directory

    def __str__(self) -> str:
        return self.message


class LinkRefused(UnsafePath):
    """The file's own name is a symbolic link, which was not followed."""


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"group {grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def _trusted(uid: int) -> bool:
    return uid in (0, os.geteuid())


def _trusted_users() -> str:
    return "root" if os.geteuid() == 0 else f"root and {_user(os.geteuid())}"


def _advice(directory: str) -> str:
    owner = "root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    return (
        f"make {directory} owned by {owner} and writable by its owner alone "
        f"(chown {owner} {directory}; chmod go-w {directory}), or choose another directory"
    )


def _other_writer(info: os.stat_result) -> str | None:
    """Who besides root and us may change this directory's entries (None: nobody)."""
    if not _trusted(info.st_uid):
        return _user(info.st_uid)  # whatever its mode: its owner may change it
    if info.st_mode & stat.S_IWOTH:
        return "every user"
    if info.st_mode & stat.S_IWGRP and info.st_gid != 0:
        return _group(info.st_gid)
    return None


def _shared_sticky(info: os.stat_result) -> bool:
    """A sticky directory of a trusted owner (/tmp): others add entries but cannot touch ours."""
    return bool(info.st_mode & stat.S_ISVTX) and _trusted(info.st_uid)


def _unsafe_directory(directory: str, info: os.stat_result, above: bool = False) -> UnsafePath:
    if not _trusted(info.st_uid):
        what = f"{directory} belongs to {_user(info.st_uid)}, not to {_trusted_users()}"
    else:
        what = f"{directory} is writable by {_other_writer(info)}"
    if above and _trusted(info.st_uid):  # only world-writable, not sticky, is refused above
        advice = f"chmod o-w {directory} (or +t), or choose another directory"
    elif _shared_sticky(info):  # /tmp: not to be changed, but not for this file
        advice = "choose a directory of its own, writable by its owner alone, for this file"
    else:
        advice = _advice(directory)
    return UnsafePath(
        f"{what}: they could put a link to any other file in place of the one circus-sd uses; "
        + advice,
        directory,
    )


def _unsafe_above(info: os.stat_result) -> bool:
    """A directory on the way that may not be gone through: another user's (they may change
    it whatever its mode), or writable by every user and not sticky. Writable by a group is
    accepted on the way (logrotate's rule; see the module's doc)."""
    if not _trusted(info.st_uid):
        return True
    return bool(info.st_mode & stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX


def _link_followable(parent: os.stat_result, link: os.stat_result) -> bool:
    """Only a trusted user could have put this link in `parent`: nobody else may change it, or
    it is sticky and the link a trusted user's (nobody else may rename or remove it)."""
    if _other_writer(parent) is None:
        return True
    return bool(parent.st_mode & stat.S_ISVTX) and _trusted(link.st_uid)


def _foreign_entry(path: str, directory: str, uid: int) -> UnsafePath:
    return UnsafePath(
        f"{path} belongs to {_user(uid)}, in {directory}, which every user may write to: "
        f"remove it, or choose another directory",
        directory,
    )


def _names(path: str) -> list[str]:
    """`path`'s names, last first (a stack)."""
    return [name for name in reversed(path.split("/")) if name]


def open_directory(
    path: str, *, shared_ok: bool = True, create_mode: int | None = None, group: int = -1
) -> int:
    """An O_PATH descriptor of the directory `path`, reached safely (see the module's doc).

    Raises UnsafePath (an OSError) when `path` may be changed by another user, when a directory
    above it is another user's or writable by every user (and not sticky), or when a link on
    the way could be theirs. `shared_ok`: `path` itself may be a sticky directory anyone writes
    to (files in it are then checked by `open_file`). `create_mode`: create what is missing
    (directories above with 0755; `path` itself with exactly this mode, whatever the umask, and
    `group` as its group). Other OSErrors for what does not exist and the like.
    """
    return _walk(
        os.open("/", _PATH_FLAGS | os.O_DIRECTORY), "/", _names(os.path.abspath(path)), path,
        shared_ok=shared_ok, create_mode=create_mode, group=group,
    )


def _walk(
    fd: int, where: str, pending: list[str], path: str, *, shared_ok: bool = True,
    create_mode: int | None = None, group: int = -1,
) -> int:
    """From the directory `fd` (shown as `where`; owned by this call, closed or returned),
    down `pending` (a stack of names): see open_directory."""
    links = 0
    try:
        while pending:
            name = pending.pop()
            if name == ".":
                continue
            parent = os.fstat(fd)
            if _unsafe_above(parent):
                raise _unsafe_directory(where, parent, above=True)
            shared = _other_writer(parent) is not None
            sticky = shared and bool(parent.st_mode & stat.S_ISVTX)
            if name == "..":  # the kernel's own parent: no entry anyone could replace
                child = os.open("..", _PATH_FLAGS | os.O_DIRECTORY, dir_fd=fd)
                where = os.path.dirname(where)
            else:
                last = not pending
                make = None if create_mode is None else create_mode if last else 0o755
                child = _open_entry(fd, name, make, group if last else -1, exact=last)
                info = os.fstat(child)
                shown = os.path.join(where, name)
                if sticky and not _trusted(info.st_uid):
                    os.close(child)
                    raise _foreign_entry(shown, where, info.st_uid)
                if stat.S_ISLNK(info.st_mode):
                    os.close(child)
                    if not _link_followable(parent, info):
                        raise UnsafePath(
                            f"{shown} is a symbolic link in {where}, which "
                            f"{_other_writer(parent)} may change: circus-sd does not follow it; "
                            "name the directory it leads to",
                            where,
                        )
                    links += 1
                    if links > MAX_LINKS:
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                    target = os.readlink(name, dir_fd=fd)
                    if target.startswith("/"):
                        os.close(fd)
                        fd = -1
                        fd = os.open("/", _PATH_FLAGS | os.O_DIRECTORY)
                        where = "/"
                    pending.extend(_names(target))
                    continue
                if not stat.S_ISDIR(info.st_mode):
                    os.close(child)
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), shown)
                where = shown
            os.close(fd)
            fd = child
        info = os.fstat(fd)
        if _other_writer(info) is not None and not (shared_ok and _shared_sticky(info)):
            raise _unsafe_directory(where, info)
        return fd
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def _open_entry(dir_fd: int, name: str, make: int | None, group: int, exact: bool) -> int:
    """An O_PATH descriptor of `name` itself (a link is not followed). If missing and `make`
    is a mode, made a directory with it (`exact`: that very mode and `group`)."""
    try:
        return os.open(name, _PATH_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        if make is None:
            raise
    try:
        os.mkdir(name, make, dir_fd=dir_fd)
    except FileExistsError:
        pass  # made meanwhile, by someone who may: it is checked as any other
    else:
        if exact:
            # Exactly `mode`, whoever (and whatever umask) makes it first.
            made = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                           dir_fd=dir_fd)
            try:
                if group != -1:
                    os.fchown(made, -1, group)
                os.fchmod(made, make)
            finally:
                os.close(made)
    return os.open(name, _PATH_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)


def open_file(dir_fd: int, name: str, flags: int, mode: int, shown: str) -> int:
    """Open `name` in the directory `dir_fd` (from open_directory) without following a link.

    `shown`: the path, for messages. In a sticky directory others may write to, only a file of
    root's or ours with no other hard link is used. Never blocks on a FIFO (O_NONBLOCK while
    opening). Raises UnsafePath, or OSError.
    """
    try:
        fd = os.open(
            name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, mode,
            dir_fd=dir_fd,
        )
    except OSError:
        # ELOOP, or EACCES from some kernels for O_CREAT on a link in a sticky directory.
        try:
            planted = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            planted = False
        if planted:
            raise LinkRefused(
                f"{shown} is a symbolic link, which circus-sd does not follow for this file "
                "(it could lead anywhere): name the file itself",
                os.path.dirname(shown),
            ) from None
        raise
    try:
        os.set_blocking(fd, True)
        directory = os.fstat(dir_fd)
        if _other_writer(directory) is not None:
            info = os.fstat(fd)
            if not _trusted(info.st_uid):
                raise _foreign_entry(shown, os.path.dirname(shown), info.st_uid)
            if stat.S_ISREG(info.st_mode) and info.st_nlink != 1:
                raise UnsafePath(
                    f"{shown} has another hard link, in {os.path.dirname(shown)}, which every "
                    "user may write to: remove it, or choose another directory",
                    os.path.dirname(shown),
                )
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclasses.dataclass(frozen=True)
class Opened:
    """A file opened by open_following, and where it really is."""

    fd: int
    # O_PATH descriptor of the directory that holds the file (the caller closes it), and its
    # name there; -1 for a file reached through a /proc/PID/fd/N link (no name to rename).
    dir_fd: int
    name: str
    path: str  # for messages
    linked: bool  # reached through a link in place of the file's own name


def open_following(dir_fd: int, name: str, flags: int, mode: int, shown: str) -> Opened:
    """As open_file, but a symbolic link in place of `name` is followed when the directory
    holding it is trusted (nobody but root or us could have made it; never in a sticky
    directory others share). Its target is reached by the same safe walk, and is itself held
    to open_file's rules; at most MAX_FINAL_LINKS such links. A link in /proc (/dev/stdout ->
    /proc/self/fd/1 -> pipe:[...]) is opened by the kernel: it leads to a file a trusted process
    holds open, not to a path anyone could change.
    """
    current = os.dup(dir_fd)
    linked = False
    try:
        for _ in range(MAX_FINAL_LINKS + 1):
            try:
                fd = open_file(current, name, flags, mode, shown)
            except LinkRefused:
                if _other_writer(os.fstat(current)) is not None:
                    raise
            else:
                return Opened(fd, current, name, shown, linked)
            linked = True
            if _on_proc(current):
                fd = _open_proc_link(current, name, flags, shown)
                os.close(current)
                current = -1
                return Opened(fd, -1, name, shown, linked)
            link_dir, current = current, -1  # _follow closes it, whatever happens
            current, name, shown = _follow(link_dir, name, shown)
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), shown)
    except BaseException:
        if current >= 0:
            os.close(current)
        raise


def _on_proc(dir_fd: int) -> bool:
    try:
        return os.fstat(dir_fd).st_dev == os.stat("/proc", follow_symlinks=False).st_dev
    except OSError:
        return False


def _open_proc_link(dir_fd: int, name: str, flags: int, shown: str) -> int:
    fd = os.open(
        name, (flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC)) | os.O_NONBLOCK | os.O_NOCTTY
        | os.O_CLOEXEC, dir_fd=dir_fd,
    )
    try:
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _follow(dir_fd: int, name: str, shown: str) -> tuple[int, str, str]:
    """The link `name` in the trusted directory `dir_fd` (closed here): its target's directory,
    reached by the safe walk (from / or from `dir_fd`), the target's name, and its path."""
    try:
        target = os.readlink(name, dir_fd=dir_fd)
        head, tail = os.path.split(target)
        if not tail or tail in (".", ".."):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), shown)
        where = os.path.dirname(os.path.abspath(shown))
        if target.startswith("/"):
            start, where = os.open("/", _PATH_FLAGS | os.O_DIRECTORY), "/"
        else:
            start = os.open(".", _PATH_FLAGS | os.O_DIRECTORY, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    pending = _names(head)
    directory = os.path.normpath(os.path.join(where, head))
    return _walk(start, where, pending, target), tail, os.path.join(directory, tail)


def file_problem(path: str, *, shared_ok: bool = True, follow: bool = True) -> str | None:
    """Why `path` could not be opened safely (open_following, or open_file without `follow`;
    `shared_ok`: as for open_directory, for the directory that holds it), or None (also when
    it or its directory does not exist, or it is some other error). Nothing is opened but
    directories (O_PATH)."""
    try:
        directory, name = os.path.split(os.path.abspath(path))
        current = open_directory(directory, shared_ok=shared_ok)
    except UnsafePath as exc:
        return str(exc)
    except OSError:
        return None
    shown = path
    try:
        for _ in range(MAX_FINAL_LINKS + 1):
            try:
                info = os.stat(name, dir_fd=current, follow_symlinks=False)
            except OSError:
                return None
            if not stat.S_ISLNK(info.st_mode):
                return None
            if not follow or _other_writer(os.fstat(current)) is not None:
                return (
                    f"{shown} is a symbolic link, which circus-sd does not follow for this file "
                    "(it could lead anywhere): name the file itself"
                )
            if _on_proc(current):
                return None
            link_dir, current = current, -1  # _follow closes it, whatever happens
            current, name, shown = _follow(link_dir, name, shown)
            if not shared_ok and _other_writer(os.fstat(current)) is not None:
                raise _unsafe_directory(os.path.dirname(shown), os.fstat(current))
        return f"{path}: {os.strerror(errno.ELOOP)}"
    except UnsafePath as exc:
        return str(exc)
    except OSError:
        return None
    finally:
        if current >= 0:
            os.close(current)


def open_path(path: str, flags: int, mode: int) -> int:
    """`path` opened by open_file, in its directory reached by open_directory."""
    directory, name = os.path.split(os.path.abspath(path))
    dir_fd = open_directory(directory)
    try:
        return open_file(dir_fd, name, flags, mode, path)
    finally:
        os.close(dir_fd)


def ensure_directory(path: str, mode: int, group: int = -1, *, shared_ok: bool = False) -> None:
    """Make `path` (and what is missing above it) if needed, then check it as open_directory
    does: it must be changeable by root and us alone; unless `shared_ok`, it may not even be a
    sticky directory others write to. A directory made here gets exactly `mode` and `group`;
    an existing one is left as it is."""
    os.close(open_directory(path, shared_ok=shared_ok, create_mode=mode, group=group))


def directory_problem(path: str, shared_ok: bool = True) -> str | None:
    """Why open_directory would refuse `path`, or None (also when it does not exist)."""
    try:
        os.close(open_directory(path, shared_ok=shared_ok))
    except UnsafePath as exc:
        return str(exc)
    except OSError:
        pass
    return None
