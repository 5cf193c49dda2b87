"""File sinks' writers: append whole lines, rotate by size or time, reopen a moved file.

The file is opened, rotated and reopened relative to a descriptor of its directory, which is
reached safely and must be changeable by root and the arbiter's user alone (safe_paths.py): a
symbolic link another user could have made is never followed, so nobody can make the arbiter
write another file. A link only a trusted user could have made (/dev/stdout, an admin's
`current.log -> app-2026.log`) is followed by the same safe walk; the file it leads to is the one
rotated (in its own directory) and watched. A character device or FIFO (/dev/stdout in a
container) is appended to, never rotated. Run in the
sink's writer thread only. Every failure (no space, a deleted directory, a file that
cannot be opened) becomes a SinkError saying how much of the batch was written; the sink retries.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import stat
import time
from collections.abc import Callable

from circus_sd import safe_paths
from circus_sd.config.streams import ROTATE_UNITS
from circus_sd.output.lines import Buffer
from circus_sd.output.sink import Chunk, SinkError

log = logging.getLogger("circus_sd")

_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
# How often a FileStream or TimedRotatingFileStream checks that its file is still in place (so it
# recovers from a deleted file or directory); a WatchedFileStream checks before every batch.
CHECK_INTERVAL = 1.0
_DAY = 86400


@dataclasses.dataclass(frozen=True)
class SizeRotation:
    """RotatingFileHandler's scheme: NAME -> NAME.1 -> ... -> NAME.backup_count."""

    max_bytes: int
    backup_count: int


@dataclasses.dataclass(frozen=True)
class TimeRotation:
    """TimedRotatingFileHandler's scheme with Circus's suffixes: NAME.20240131 etc."""

    when: str  # S M H D MIDNIGHT W0..W6
    interval: int
    backup_count: int
    utc: bool

    @property
    def seconds(self) -> int:
        unit = _DAY * 7 if self.when.startswith("W") else ROTATE_UNITS[self.when]
        return unit * self.interval

    @property
    def suffix(self) -> str:
        return {"S": "%Y%m%d%H%M%S", "M": "%Y%m%d%H%M", "H": "%Y%m%d%H"}.get(self.when, "%Y%m%d")

    @property
    def suffix_pattern(self) -> re.Pattern[str]:
        digits = len(time.strftime(self.suffix, time.gmtime(0)))
        return re.compile(rf"\d{{{digits}}}\Z")

    def next_rollover(self, now: float) -> float:
        """When the file opened (or last rotated) at `now` is rotated next."""
        current = int(now)
        if self.when != "MIDNIGHT" and not self.when.startswith("W"):
            return current + self.seconds
        t = time.gmtime(current) if self.utc else time.localtime(current)
        result = current + _DAY - ((t.tm_hour * 60 + t.tm_min) * 60 + t.tm_sec)
        if self.when == "MIDNIGHT":
            return result + (self.interval - 1) * _DAY
        # Wn: at the midnight that ends weekday n, as logging does.
        day, today = int(self.when[1]), t.tm_wday
        if day != today:
            result += (day - today if today < day else 6 - today + day + 1) * _DAY
        return result


class FileWriter:
    """Appends to one file (O_APPEND), optionally rotating it; reopens it when it moved."""

    def __init__(
        self,
        path: str,
        rotation: SizeRotation | TimeRotation | None = None,
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._directory, self._name = os.path.split(os.path.abspath(path))
        self.rotation = rotation
        self.check_interval = check_interval
        self._clock = clock
        self._fd = -1
        self._dir_fd = -1  # O_PATH, of the directory of `path`
        # Where the open file really is (not `path`'s directory and name when reached through a
        # link): O_PATH of its directory (-1: none, as through /proc/self/fd/N), and its name.
        self._file_dir_fd = -1
        self._file_name = self._name
        self._linked = False  # reached through a link in place of `path`'s own name
        self._rotatable = True  # a regular file with a name: not a device, a FIFO, a pipe
        self._told_not_rotated = False
        self._identity = (0, 0)
        self._size = 0
        self._checked = 0.0
        self._rollover_at = 0.0
        self.description = f"file {path}"
        self.reopened = 0  # times the file was found moved or deleted and opened again

    # -- opening ---------------------------------------------------------------------------------

    def _open(self) -> None:
        """Open the file in its directory (reached safely first, unless already held)."""
        try:
            if self._dir_fd < 0:
                self._dir_fd = safe_paths.open_directory(self._directory)
            opened = safe_paths.open_following(
                self._dir_fd, self._name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666, self.path
            )
        except OSError as exc:  # safe_paths.UnsafePath too
            # The next try finds the directory again: it may be back, or fixed, by then.
            self._close_dir()
            if isinstance(exc, safe_paths.UnsafePath):
                raise SinkError(
                    f"refusing to write {self.path}: {exc} (circus-sd writes the file; the "
                    "program needs no access to it)"
                ) from None
            raise SinkError(f"cannot open {self.path}: {exc.strerror}") from None
        fd = opened.fd
        info = os.fstat(fd)
        self._close_file_dir()
        self._file_dir_fd, self._file_name, self._linked = opened.dir_fd, opened.name, opened.linked
        self._rotatable = stat.S_ISREG(info.st_mode) and opened.dir_fd >= 0
        if not self._rotatable and self.rotation is not None and not self._told_not_rotated:
            self._told_not_rotated = True
            what = "a regular file" if stat.S_ISREG(info.st_mode) else "a device or a pipe"
            log.warning(
                "%s leads to %s (%s): appended to, never rotated (its rotation options are "
                "ignored)", self.path, opened.path, what,
            )
        self._fd = fd
        self._identity = (info.st_dev, info.st_ino)
        self._size = info.st_size
        self._checked = self._clock()
        if isinstance(self._rotation, TimeRotation):
            # As logging does: a file that exists rotates on the schedule of its last change.
            since = info.st_mtime if info.st_size else self._checked
            self._rollover_at = self._rotation.next_rollover(since)

    def _close_fd(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _close_dir(self) -> None:
        self._close_file_dir()
        if self._dir_fd >= 0:
            fd, self._dir_fd = self._dir_fd, -1
            os.close(fd)

    def _close_file_dir(self) -> None:
        if self._file_dir_fd >= 0:
            fd, self._file_dir_fd = self._file_dir_fd, -1
            os.close(fd)

    @property
    def _rotation(self) -> SizeRotation | TimeRotation | None:
        """The rotation in effect: none for what cannot be rotated (a device, a pipe)."""
        return self.rotation if self._rotatable else None

    def _still_in_place(self) -> bool:
        """The file at `path` is still the one open (a link in its place is not, unless the
        file was reached through a trusted link: then where the link now leads is)."""
        if not self._rotatable:
            return True  # a device or a pipe does not move with logrotate
        try:
            info = os.stat(self.path, follow_symlinks=self._linked)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self._identity

    def _prepare(self) -> None:
        """An open fd on the file at `path` (checked every check_interval), rotated if due."""
        now = self._clock()
        if self._fd >= 0 and now - self._checked >= self.check_interval:
            self._checked = now
            if not self._still_in_place():
                self._close_fd()
                self._close_dir()  # found again from /, as the first time
                self.reopened += 1
        if self._fd < 0:
            self._open()
        if isinstance(self._rotation, TimeRotation) and now >= self._rollover_at:
            self._rotate_by_time(now)

    # -- writing ---------------------------------------------------------------------------------

    def write(self, batch: list[Chunk]) -> None:
        self._prepare()
        parts = [part for chunk in batch for part in chunk.parts]
        rotation = self._rotation
        if isinstance(rotation, SizeRotation) and rotation.backup_count > 0:
            self._write_rotating(parts, rotation)
        else:
            self._writev(parts, 0)

    def _writev(self, parts: list[Buffer], written_before: int) -> int:
        """Write all of `parts`; bytes written. SinkError counts `written_before` in."""
        written = 0
        index = 0
        while index < len(parts):
            group = parts[index : index + _IOV_MAX]
            try:
                count = os.writev(self._fd, group)
            except OSError as exc:
                raise SinkError(
                    f"cannot write {self.path}: {exc.strerror}", written_before + written
                ) from None
            written += count
            self._size += count
            # Skip what was written; a short write leaves the tail of one part.
            for part in group:
                if count >= len(part):
                    count -= len(part)
                    index += 1
                else:
                    parts[index] = memoryview(part)[count:]
                    break
        return written

    def _write_rotating(self, parts: list[Buffer], rotation: SizeRotation) -> None:
        """Write so that no file grows past max_bytes, rotating between whole lines."""
        written = 0
        queued: list[Buffer] = []
        queued_size = 0
        for part in parts:
            while len(part):
                room = rotation.max_bytes - self._size - queued_size
                if len(part) <= room:
                    queued.append(part)
                    queued_size += len(part)
                    break
                written += self._writev(queued, written)
                queued, queued_size = [], 0
                data = bytes(part)
                cut = data.rfind(b"\n", 0, max(room, 0)) + 1
                if not cut and self._size == 0:
                    # A single line longer than a whole file: it gets a file of its own.
                    cut = data.find(b"\n") + 1 or len(data)
                if cut:
                    written += self._writev([data[:cut]], written)
                part = data[cut:]
                self._rotate_by_size(rotation, written)
        written += self._writev(queued, written)

    # -- rotating --------------------------------------------------------------------------------

    def _rename(self, source: str, target: str) -> bool:
        """Rename within the file's directory (a link is renamed, never followed); False if
        `source` does not exist."""
        try:
            os.rename(source, target, src_dir_fd=self._file_dir_fd, dst_dir_fd=self._file_dir_fd)
        except FileNotFoundError:
            return False
        return True

    def _rotate_by_size(self, rotation: SizeRotation, written: int) -> None:
        self._close_fd()
        try:
            name = self._file_name
            for index in range(rotation.backup_count - 1, 0, -1):
                self._rename(f"{name}.{index}", f"{name}.{index + 1}")
            self._rename(name, f"{name}.1")
        except OSError as exc:
            raise SinkError(f"cannot rotate {self.path}: {exc.strerror}", written) from None
        try:
            self._open()
        except SinkError as error:
            raise SinkError(error.reason, written) from None

    def _rotate_by_time(self, now: float) -> None:
        rotation = self.rotation
        assert isinstance(rotation, TimeRotation)
        # The file is named after the start of the interval it holds, as in Circus and logging.
        start = self._rollover_at - rotation.seconds
        stamp = time.gmtime(start) if rotation.utc else time.localtime(start)
        target = f"{self._file_name}.{time.strftime(rotation.suffix, stamp)}"
        self._close_fd()
        try:
            self._rename(self._file_name, target)
            if rotation.backup_count > 0:
                for old in self._old_backups(rotation):
                    os.unlink(old, dir_fd=self._file_dir_fd)
        except OSError as exc:
            raise SinkError(f"cannot rotate {self.path}: {exc.strerror}") from None
        self._open()
        rollover = rotation.next_rollover(now)
        while rollover <= now:
            rollover += rotation.seconds
        self._rollover_at = rollover

    def _old_backups(self, rotation: TimeRotation) -> list[str]:
        """Names of the rotated files past backup_count, oldest first: only plain files of root
        or the arbiter's user (in a sticky directory others share, never someone else's)."""
        prefix = self._file_name + "."
        pattern = rotation.suffix_pattern
        directory = self._file_dir_fd
        listing = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=directory)
        try:
            names = os.listdir(listing)
        finally:
            os.close(listing)
        backups = []
        for name in sorted(names):
            if not (name.startswith(prefix) and pattern.match(name[len(prefix) :])):
                continue
            try:
                info = os.stat(name, dir_fd=directory, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_uid in (0, os.geteuid()):
                backups.append(name)
        return backups[: max(0, len(backups) - rotation.backup_count)]

    def close(self) -> None:
        self._close_fd()
        self._close_dir()
