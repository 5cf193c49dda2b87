"""The arbiter's log sent natively to journald, each line with the fields of what it is about.

A log call about a watcher or a process passes `extra=about(...)`: the record then carries a
`LogSubject` that `JournalLogHandler` sends as MESSAGE_ID=, WATCHER=, WID= and CHILD_PID=, the
same fields as that watcher's output (output/journal.py), so `journalctl WATCHER=web` shows the
program's lines and what happened to it interleaved. Every other handler ignores the subject and
writes the text as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import TextIO

from circus_sd.message_ids import MessageId

SOCKET = "/run/systemd/journal/socket"
# The record attribute `about()` sets (through logging's `extra=`).
SUBJECT_ATTRIBUTE = "circus_sd_subject"

# syslog priorities (what journald's PRIORITY= and `journalctl -p` use) of logging's levels.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

Send = Callable[..., None]


def syslog_priority(level: int) -> int:
    """The syslog priority of a logging level (one between two is counted as the lower one)."""
    for threshold in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if level >= threshold:
            return _PRIORITY[threshold]
    return _PRIORITY[logging.DEBUG]


@dataclasses.dataclass(frozen=True)
class LogSubject:
    """What one log line is about: its kind, and the watcher, worker and process concerned."""

    kind: MessageId
    watcher: str | None = None
    wid: int | None = None
    pid: int | None = None

    def journal_fields(self) -> dict[str, str]:
        """The fields as output lines carry them; OBJECT_PID= is left out: the process a line
        is about has often exited and been reaped, and its pid may be another process's now."""
        fields = {"MESSAGE_ID": self.kind.value}
        if self.watcher is not None:
            fields["WATCHER"] = self.watcher
        if self.wid is not None:
            fields["WID"] = str(self.wid)
        if self.pid is not None:
            fields["CHILD_PID"] = str(self.pid)
        return fields


def about(
    kind: MessageId, watcher: str | None = None, wid: int | None = None, pid: int | None = None
) -> dict[str, LogSubject]:
    """`extra=` for a log call about a watcher or a process."""
    return {SUBJECT_ATTRIBUTE: LogSubject(kind, watcher, wid, pid)}


def subject_of(record: logging.LogRecord) -> LogSubject | None:
    subject = getattr(record, SUBJECT_ATTRIBUTE, None)
    return subject if isinstance(subject, LogSubject) else None


def _default_send() -> Send:
    from systemd import journal

    send: Send = journal.sendv
    return send


class JournalLogHandler(logging.Handler):
    """Sends each record as one journal entry: MESSAGE (the formatted text, a traceback
    included), PRIORITY, SYSLOG_IDENTIFIER, where it was logged (CODE_*), and its subject's
    fields. Runs in the log writer's thread (logging_setup.py): a journald that is slow to take
    entries holds that thread, never the event loop.

    An entry journald does not take (its socket refuses it) is written to stderr instead, with
    the sd-daemon `<N>` prefix: stderr is journald's stream then, which may still take it.
    """

    def __init__(
        self,
        identifier: str,
        send: Send | None = None,
        fallback: Callable[[], TextIO] | None = None,
    ) -> None:
        super().__init__()
        self.identifier = identifier
        self._send = send or _default_send()
        self._fallback = fallback or (lambda: sys.stderr)

    def entry(self, record: logging.LogRecord) -> dict[str, str]:
        """The entry's fields, by name."""
        fields = {
            "MESSAGE": self.format(record),
            "PRIORITY": str(syslog_priority(record.levelno)),
            "SYSLOG_IDENTIFIER": self.identifier,
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
            "CODE_FUNC": record.funcName,
        }
        subject = subject_of(record)
        if subject is not None:
            fields.update(subject.journal_fields())
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = self.entry(record)
        except Exception:
            self.handleError(record)
            return
        try:
            self._send(*(f"{name}={value}" for name, value in fields.items()))
        except Exception:
            # Any failure (a refused entry, text it cannot encode) costs this record its
            # fields, never the log writer thread that runs this handler.
            self._write_fallback(fields)

    def _write_fallback(self, fields: Mapping[str, str]) -> None:
        stream = self._fallback()
        with contextlib.suppress(OSError, ValueError):  # UnicodeError is a ValueError
            stream.write(f"<{fields['PRIORITY']}>{fields['MESSAGE']}\n")
            stream.flush()


def journal_reachable(socket_path: str = SOCKET) -> bool:
    """journald's native socket exists and systemd-python is installed."""
    if not os.path.exists(socket_path):
        return False
    try:
        import systemd.journal  # noqa: F401
    except ImportError:
        return False
    return True
