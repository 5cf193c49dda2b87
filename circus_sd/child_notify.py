"""sd_notify served to children: one datagram socket per process, attributed by the socket.

Each process of a `notify = true` watcher gets NOTIFY_SOCKET pointing at a socket file of its
own, owned by the process's uid and mode 0600: whatever arrives there (the program itself, a
wrapper's `systemd-notify --ready`, a forked helper) speaks for that process, and nobody else
can write there. Messages are plain sd_notify text: KEY=VALUE lines.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat

from circus_sd import safe_paths


def parse_message(data: bytes) -> dict[str, str]:
    fields = {}
    for line in data.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


class NotifySocket:
    """The socket of one process; created before the spawn so its path can go in the env."""

    def __init__(self, path: str, uid: int | None, gid: int | None) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        self.sock.bind(path)
        os.chmod(path, 0o600)
        if uid is not None or gid is not None:
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)

    @classmethod
    def adopt(cls, fd: int, path: str) -> NotifySocket:
        """A socket made by a previous program of this arbiter (a re-execution)."""
        notify = cls.__new__(cls)
        notify.path = path
        notify.sock = socket.socket(fileno=fd)
        notify.sock.set_inheritable(False)
        return notify

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[dict[str, str]]:
        """Every message waiting on the socket."""
        messages: list[dict[str, str]] = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return messages
            messages.append(parse_message(data))

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class NotifySockets:
    """Makes per-process sockets in a private directory, removed when the arbiter stops."""

    def __init__(self, parent: str) -> None:
        self._parent = parent
        self._directory: str | None = None
        self._count = 0

    def open(self, watcher: str, wid: int, uid: int | None, gid: int | None) -> NotifySocket:
        if self._directory is None:
            # As private as the control sockets make it (0700), whoever comes first; refused
            # (an OSError: the spawn fails, saying why) if another user made it or may write it.
            safe_paths.ensure_directory(self._parent, 0o700)
            # Imported for the first notify process, not at every start (4 ms with shutil).
            import tempfile

            self._directory = tempfile.mkdtemp(prefix="notify-", dir=self._parent)
            # Children running as other users must reach their own socket inside.
            os.chmod(self._directory, 0o711)
        if uid is not None and uid != os.geteuid():
            # The parent is also the control sockets' directory, private (0700) unless systemd
            # made it: another user's process could not reach its socket. Traversal (x) alone
            # opens nothing: every file inside keeps its own mode (sockets 0600).
            mode = stat.S_IMODE(os.stat(self._parent).st_mode)
            if mode & 0o011 != 0o011:
                os.chmod(self._parent, mode | 0o011)
        self._count += 1
        name = f"{watcher}-{wid}-{self._count}.sock"
        return NotifySocket(os.path.join(self._directory, name), uid, gid)

    @property
    def directory(self) -> str | None:
        return self._directory

    def adopt(self, directory: str | None, count: int) -> None:
        """Keep using the directory a previous program of this arbiter made."""
        self._directory = directory
        self._count = count

    @property
    def count(self) -> int:
        return self._count

    def close(self) -> None:
        if self._directory is not None:
            import shutil

            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
