"""A watcher's past output, read from where its stream writes: a file's tail or the journal.

Where that is comes from the watcher's `options` (`stdout_stream.class`, `.filename`); the
arbiter keeps no history itself. Lines are bytes, without their newline.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import os
from collections.abc import Iterator, Mapping
from typing import Any

FILE_CLASSES = frozenset({"filestream", "timedrotatingfilestream", "watchedfilestream",
                          "rotatingfilestream"})
JOURNAL_CLASS = "journalstream"
_BLOCK = 64 * 1024


class Where(enum.Enum):
    FILE = "file"
    JOURNAL = "journal"
    NOWHERE = "nowhere"  # the arbiter's own output, a custom class, journald's stream socket


@dataclasses.dataclass(frozen=True)
class StreamTarget:
    """Where one stream of a watcher goes, as far as reading it back is concerned."""

    where: Where
    path: str = ""
    why: str = ""  # for NOWHERE: what the user should know


@dataclasses.dataclass(frozen=True)
class HistoryLine:
    data: bytes
    wid: int | None = None  # the journal knows which process wrote a line, a file does not


def _stream_conf(options: Mapping[str, Any], stream: str) -> dict[str, Any]:
    """`{"class": ..., "filename": ...}` from circus-sd's flat keys or Circus's `*_conf`."""
    conf: dict[str, Any] = {}
    nested = options.get(f"{stream}_stream_conf")
    if isinstance(nested, Mapping):
        conf.update({str(key).lower(): value for key, value in nested.items()})
    prefix = f"{stream}_stream."
    conf.update({key[len(prefix):].lower(): value for key, value in options.items()
                 if key.startswith(prefix)})
    return conf


def stream_target(options: Mapping[str, Any], stream: str) -> StreamTarget:
    """Where `stream` ("stdout" or "stderr") of a watcher with these options is kept."""
    conf = _stream_conf(options, stream)
    raw_class = str(conf.get("class") or "")
    # Circus spells classes dotted too: circus.stream.FileStream.
    class_name = raw_class.rpartition(".")[2].lower()
    filename = conf.get("filename")
    if not class_name and filename:
        class_name = "filestream"
    if class_name in FILE_CLASSES and isinstance(filename, str) and filename:
        return StreamTarget(Where.FILE, filename)
    if class_name == JOURNAL_CLASS:
        if str(conf.get("direct", "")).lower() in ("true", "1", "yes", "on"):
            return StreamTarget(Where.NOWHERE, why="its processes write to journald themselves "
                                "(direct = true), without WATCHER= fields")
        return StreamTarget(Where.JOURNAL)
    if not class_name:
        return StreamTarget(Where.NOWHERE, why="it goes to the arbiter's own output")
    return StreamTarget(Where.NOWHERE, why=f"it goes to {raw_class}")


# -- files ---------------------------------------------------------------------------------------


def _rotated(path: str) -> list[str]:
    """The backups beside `path` (NAME.1, NAME.20261202...), newest first."""
    directory, base = os.path.split(path)
    found = []
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return []
    for name in names:
        if name.startswith(base + ".") and name[len(base) + 1:].replace("_", "").replace(
                "-", "").isdigit():
            full = os.path.join(directory, name)
            try:
                found.append((os.stat(full).st_mtime, full))
            except OSError:
                continue
    return [full for _, full in sorted(found, reverse=True)]


def _last_lines_of(path: str, count: int) -> list[bytes]:
    """The last `count` lines of one file, read backwards in blocks (a log may be large)."""
    with open(path, "rb") as file:
        end = file.seek(0, os.SEEK_END)
        data = b""
        position = end
        while position > 0 and data.count(b"\n") <= count:
            step = min(_BLOCK, position)
            position -= step
            file.seek(position)
            data = file.read(step) + data
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file ends with a newline, as the sink writes whole lines
    if position > 0:
        lines = lines[1:]  # the first one may be cut
    return lines[-count:] if count else []


def file_tail(path: str, count: int) -> list[HistoryLine]:
    """The last `count` lines written to `path`, reaching into its rotated backups if needed."""
    lines: list[bytes] = []
    for source in [path, *_rotated(path)]:
        if len(lines) >= count:
            break
        try:
            lines = _last_lines_of(source, count - len(lines)) + lines
        except FileNotFoundError:
            continue
    return [HistoryLine(line) for line in lines]


# -- the journal ---------------------------------------------------------------------------------


def journal_tail(watcher: str, count: int | None, since: float | None) -> list[HistoryLine]:
    """The watcher's output entries (WATCHER=, no MESSAGE_ID: the arbiter's lifecycle entries
    carry one) since `since`, the last `count` of them. ImportError without systemd-python."""
    from systemd import journal

    reader = journal.Reader()
    try:
        reader.add_match(WATCHER=watcher)
        return [_history_line(entry) for entry in _entries(reader, count, since)]
    finally:
        reader.close()


def _entries(reader: Any, count: int | None, since: float | None) -> Iterator[Mapping[str, Any]]:
    if since is not None:
        import datetime

        reader.seek_realtime(datetime.datetime.fromtimestamp(since))
        kept: collections.deque[Mapping[str, Any]] = collections.deque(maxlen=count)
        for entry in reader:
            if "MESSAGE_ID" not in entry:
                kept.append(entry)
        yield from kept
        return
    if count == 0:
        return
    reader.seek_tail()
    newest_first: list[Mapping[str, Any]] = []
    while count is None or len(newest_first) < count:
        entry = reader.get_previous()
        if not entry:
            break
        if "MESSAGE_ID" not in entry:
            newest_first.append(entry)
    yield from reversed(newest_first)


def _history_line(entry: Mapping[str, Any]) -> HistoryLine:
    message = entry.get("MESSAGE", b"")
    data = message if isinstance(message, bytes) else str(message).encode()
    wid = entry.get("WID")
    try:
        number = int(wid) if wid is not None else None
    except (TypeError, ValueError):
        number = None
    return HistoryLine(data, number)
