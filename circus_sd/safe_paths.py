"""Reach files and directories without following a link another user could have planted.

The arbiter usually runs as root and writes where its configuration says: log files, the
pidfile, lock files, sockets. Anyone who may change the entries of a directory on that path can
replace a name with a symbolic link and make root write elsewhere (a cron.d file, an
authorized_keys). So, as logrotate and OpenSSH's StrictModes do, a path is used only when every
directory from / down to it can be changed by *trusted* users alone: root and the arbiter's own
user. A sticky directory that anyone may write to (/tmp) is fine to go through, as long as the
entry used in it belongs to a trusted user: the kernel lets nobody else rename or remove it.
Symbolic links on the way are followed only where a trusted user alone could have made them;
the last name of a file is never followed.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat

# As the kernel's own limit on symbolic links followed while resolving one path.
MAX_LINKS = 40
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


def _unsafe_directory(directory: str, info: os.stat_result) -> UnsafePath:
    if not _trusted(info.st_uid):
        what = f"{directory} belongs to {_user(info.st_uid)}, not to {_trusted_users()}"
    else:
        what = f"{directory} is writable by {_other_writer(info)}"
    return UnsafePath(
        f"{what}: they could put a link to any other file in place of the one circus-sd uses; "
        + _advice(directory),
        directory,
    )


def _foreign_entry(path: str, directory: str, uid: int) -> UnsafePath:
    return UnsafePath(
        f"{path} belongs to {_user(uid)}, in {directory}, which every user may write to: "
        f"remove it, or choose another directory",
        directory,
    )


def open_directory(
    path: str, *, shared_ok: bool = True, create_mode: int | None = None, group: int = -1
) -> int:
    """An O_PATH descriptor of the directory `path`, reached safely (see the module's doc).

    Raises UnsafePath (an OSError) when `path` or a directory above it may be changed by
    another user, or when a link on the way could be theirs. `shared_ok`: `path` itself may be
    a sticky directory anyone writes to (files in it are then checked by `open_file`).
    `create_mode`: create what is missing (directories above with 0755; `path` itself with
    exactly this mode, whatever the umask, and `group` as its group). Other OSErrors for what
    does not exist and the like.
    """
    pending = [name for name in reversed(os.path.abspath(path).split("/")) if name]
    fd = os.open("/", _PATH_FLAGS | os.O_DIRECTORY)
    where = "/"
    links = 0
    try:
        while pending:
            name = pending.pop()
            if name == ".":
                continue
            parent = os.fstat(fd)
            shared = _other_writer(parent) is not None
            if shared and not _shared_sticky(parent):
                raise _unsafe_directory(where, parent)
            if name == "..":  # the kernel's own parent: no entry anyone could replace
                child = os.open("..", _PATH_FLAGS | os.O_DIRECTORY, dir_fd=fd)
                where = os.path.dirname(where)
            else:
                last = not pending
                make = None if create_mode is None else create_mode if last else 0o755
                child = _open_entry(fd, name, make, group if last else -1, exact=last)
                info = os.fstat(child)
                shown = os.path.join(where, name)
                if shared and not _trusted(info.st_uid):
                    os.close(child)
                    raise _foreign_entry(shown, where, info.st_uid)
                if stat.S_ISLNK(info.st_mode):
                    os.close(child)
                    links += 1
                    if links > MAX_LINKS:
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                    target = os.readlink(name, dir_fd=fd)
                    if target.startswith("/"):
                        os.close(fd)
                        fd = os.open("/", _PATH_FLAGS | os.O_DIRECTORY)
                        where = "/"
                    pending.extend(n for n in reversed(target.split("/")) if n)
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
            raise UnsafePath(
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


def open_path(path: str, flags: int, mode: int) -> int:
    """`path` opened by open_file, in its directory reached by open_directory."""
    directory, name = os.path.split(os.path.abspath(path))
    dir_fd = open_directory(directory)
    try:
        return open_file(dir_fd, name, flags, mode, path)
    finally:
        os.close(dir_fd)


def ensure_directory(path: str, mode: int, group: int = -1) -> None:
    """Make `path` (and what is missing above it) if needed, then check it: it and every
    directory above must be changeable by root and us alone; it may not even be a sticky
    directory others write to. A directory made here gets exactly `mode` and `group`."""
    os.close(open_directory(path, shared_ok=False, create_mode=mode, group=group))


def directory_problem(path: str, shared_ok: bool = True) -> str | None:
    """Why open_directory would refuse `path`, or None (also when it does not exist)."""
    try:
        os.close(open_directory(path, shared_ok=shared_ok))
    except UnsafePath as exc:
        return str(exc)
    except OSError:
        pass
    return None
