"""The pidfile, held under an exclusive lock so that a second arbiter cannot start on it.

Opened without following a link, in a directory only root and the arbiter's user may change
(safe_paths.py): another user cannot make the arbiter truncate or remove some other file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from circus_sd import safe_paths


class PidFileError(Exception):
    """The pidfile cannot be used; the message says why."""


class PidFileLocked(PidFileError):
    """Another live process holds the pidfile's lock."""


class PidFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self._name = os.path.basename(os.path.abspath(path))
        self._fd: int | None = None
        self._dir_fd: int | None = None

    def acquire(self) -> None:
        try:
            dir_fd = safe_paths.open_directory(os.path.dirname(os.path.abspath(self.path)))
            try:
                flags = os.O_RDWR | os.O_CREAT
                fd = safe_paths.open_file(dir_fd, self._name, flags, 0o644, self.path)
            except BaseException:
                os.close(dir_fd)
                raise
        except safe_paths.UnsafePath as exc:
            raise PidFileError(f"pidfile: refusing {self.path}: {exc}") from None
        except OSError as exc:
            raise PidFileError(f"pidfile: cannot open {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            os.close(dir_fd)
            raise PidFileLocked(
                f"{self.path} is locked by pid {holder}: another circus-sd is running"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd, self._dir_fd = fd, dir_fd

    def carry(self) -> tuple[str, int, int] | None:
        """Its path and descriptors, left open (and locked) across a re-execution."""
        if self._fd is None or self._dir_fd is None:
            return None
        os.set_inheritable(self._fd, True)
        os.set_inheritable(self._dir_fd, True)
        return self.path, self._fd, self._dir_fd

    @classmethod
    def adopt(cls, carried: tuple[str, int, int]) -> PidFile:
        """The pidfile a previous program of this arbiter locked (same pid: its content holds)."""
        path, fd, dir_fd = carried
        pidfile = cls(path)
        os.set_inheritable(fd, False)
        os.set_inheritable(dir_fd, False)
        pidfile._fd, pidfile._dir_fd = fd, dir_fd
        return pidfile

    def release(self) -> None:
        if self._fd is None or self._dir_fd is None:
            return
        # Only our own file, in the directory it was opened in: if something else has taken its
        # name by now, it is not ours to remove.
        with contextlib.suppress(FileNotFoundError):
            here = os.stat(self._name, dir_fd=self._dir_fd, follow_symlinks=False)
            mine = os.fstat(self._fd)
            if (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
                os.unlink(self._name, dir_fd=self._dir_fd)
        os.close(self._fd)
        os.close(self._dir_fd)
        self._fd = self._dir_fd = None
