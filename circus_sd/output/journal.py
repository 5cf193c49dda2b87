"""JournalStream: each line a journal entry with the watcher's fields, sent by systemd-python.

The native protocol (one datagram per entry, fields sent by us) carries what the stream
protocol cannot: WATCHER=, WID=, CHILD_PID= and, from root, OBJECT_PID= so that journald adds
the child's own _COMM/_EXE/cgroup as OBJECT_* fields. `direct = true` is the other way: the child
itself is connected to journald's stream socket before exec (spawner.py), and the arbiter never
sees its output.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from circus_sd.output.sink import Chunk, Origin, SinkError

SOCKET = "/run/systemd/journal/socket"
STDOUT_SOCKET = "/run/systemd/journal/stdout"
DEFAULT_PRIORITY = {"stdout": 6, "stderr": 4}  # info, warning
_CACHED_ORIGINS = 4096

Send = Callable[..., None]


def _default_send() -> Send:
    from systemd import journal

    send: Send = journal.sendv
    return send


def split_level_prefix(line: bytes, priority: int) -> tuple[bytes, int]:
    """An sd-daemon(3) `<N>` prefix (N = 0-7) sets the priority and is removed."""
    if len(line) >= 3 and line[0] == 0x3C and line[2] == 0x3E and 0x30 <= line[1] <= 0x37:
        return line[3:], line[1] - 0x30
    return line, priority


class JournalWriter:
    """Sends each line as one entry; the fields that never change per process are built once."""

    def __init__(
        self,
        identifier: str | None,
        priority: int | None,
        level_prefix: bool,
        object_pid: bool,
        send: Send | None = None,
        socket_path: str | None = SOCKET,
    ) -> None:
        self.identifier = identifier
        self.priority = priority
        self.level_prefix = level_prefix
        self.object_pid = object_pid
        self._send = send or _default_send()
        # systemd's sendv silently drops entries when the socket is missing: check it per batch
        # so that those lines are counted as dropped instead.
        self._socket_path = socket_path
        self._static: dict[Origin, tuple[int, tuple[bytes, ...]]] = {}
        self.description = "journald"

    def fields_of(self, origin: Origin) -> tuple[int, tuple[bytes, ...]]:
        """(default priority, the fields after MESSAGE and PRIORITY) of one process's stream."""
        known = self._static.get(origin)
        if known is None:
            if len(self._static) >= _CACHED_ORIGINS:
                self._static.clear()  # processes come and go: keep the cache bounded
            identifier = self.identifier or origin.watcher
            fields = [
                b"SYSLOG_IDENTIFIER=" + identifier.encode(),
                b"WATCHER=" + origin.watcher.encode(),
                b"WID=%d" % origin.wid,
                b"CHILD_PID=%d" % origin.pid,
            ]
            if self.object_pid:
                fields.append(b"OBJECT_PID=%d" % origin.pid)
            priority = self.priority if self.priority is not None else DEFAULT_PRIORITY.get(
                origin.stream, 6
            )
            known = self._static[origin] = (priority, tuple(fields))
        return known

    def entry(self, line: bytes, origin: Origin) -> list[bytes]:
        """The fields of the entry for one line (without its b"\\n")."""
        default, fields = self.fields_of(origin)
        priority = default
        if self.level_prefix:
            line, priority = split_level_prefix(line, default)
        return [b"MESSAGE=" + line, b"PRIORITY=%d" % priority, *fields]

    def write(self, batch: list[Chunk]) -> None:
        if self._socket_path is not None and not os.path.exists(self._socket_path):
            raise SinkError(f"journald is not running ({self._socket_path} is missing)")
        written = 0
        send = self._send
        for chunk in batch:
            data = b"".join(chunk.parts)
            for line in data[:-1].split(b"\n"):
                try:
                    send(*self.entry(line, chunk.origin))
                except OSError as exc:
                    raise SinkError(f"cannot send to journald: {exc.strerror}", written) from None
                written += len(line) + 1

    def close(self) -> None:
        pass
