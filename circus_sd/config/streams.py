"""`stdout_stream.*` / `stderr_stream.*`: Circus's stream classes and their options, typed."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from circus_sd import safe_paths
from circus_sd.config.options import (
    OptionValueError,
    boolean,
    decimal_integer,
    integer,
    option,
    optional_text,
    options_of,
)

FILE = "FileStream"
TIMED_ROTATING_FILE = "TimedRotatingFileStream"
WATCHED_FILE = "WatchedFileStream"
STDOUT = "StdoutStream"
FANCY_STDOUT = "FancyStdoutStream"
JOURNAL = "JournalStream"
BUILT_IN = (FILE, TIMED_ROTATING_FILE, WATCHED_FILE, STDOUT, FANCY_STDOUT, JOURNAL)
FILE_CLASSES = (FILE, TIMED_ROTATING_FILE, WATCHED_FILE)

# Module paths under which Circus (and circus-sd) spell the built-in classes.
_BUILT_IN_MODULES = ("circus.stream", "circus.stream.file_stream")
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+\Z")

# FancyStdoutStream's colours, in ANSI order (30 + index + 1), as Circus lists them.
COLORS = ("red", "green", "yellow", "blue", "magenta", "cyan", "white")

# syslog priority names journald and logger(1) know, for `priority`.
_PRIORITIES = {
    "emerg": 0, "alert": 1, "crit": 2, "err": 3, "error": 3, "warning": 4, "warn": 4,
    "notice": 5, "info": 6, "debug": 7,
}

# TimedRotatingFileStream's `rotate_when`: seconds per unit (D and MIDNIGHT: a day, Wn: a week).
ROTATE_UNITS = {"S": 1, "M": 60, "H": 3600, "D": 86400, "MIDNIGHT": 86400}


def stream_class(raw: str) -> str:
    """A built-in class (bare or dotted Circus spelling, any case) or a user's dotted class."""
    value = raw.strip()
    module, _, name = value.rpartition(".")
    if not module or module in _BUILT_IN_MODULES:
        for known in BUILT_IN:
            if name.lower() == known.lower():
                return known
    if module and _DOTTED.match(value):
        return value
    raise OptionValueError(
        f"expected one of {', '.join(BUILT_IN)} or a dotted path to a class, got {raw!r}"
    )


def rotate_when(raw: str) -> str:
    value = raw.strip().upper()
    if value in ROTATE_UNITS or re.fullmatch(r"W[0-6]", value):
        return value
    raise OptionValueError(
        f"expected S, M, H, D, MIDNIGHT or W0-W6 (any case), got {raw!r}"
    )


def color(raw: str) -> str | None:
    value = raw.strip().lower()
    if not value:
        return None
    if value not in COLORS:
        raise OptionValueError(f"expected one of {', '.join(COLORS)}, got {raw!r}")
    return value


def syslog_priority(raw: str) -> int | None:
    value = raw.strip().lower()
    if not value:
        return None
    number_ = decimal_integer(value)
    if number_ is not None and number_ <= 7:
        return number_
    if value in _PRIORITIES:
        return _PRIORITIES[value]
    raise OptionValueError(f"expected a syslog priority 0-7 or a name (info, err...), got {raw!r}")


def file_path(raw: str) -> str | None:
    # Absolute from the arbiter's directory, so that two spellings of one file share its sink.
    value = raw.strip()
    if "\0" in value:  # (from JSON, through `set`): no system call takes it
        raise OptionValueError(f"a file name cannot contain a NUL byte, got {raw!r}")
    return os.path.abspath(value) if value else None


def optional_seconds(raw: str) -> float | None:
    value = raw.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise OptionValueError(f"expected a number of seconds, got {raw!r}") from None
    if seconds != seconds or seconds < 0:
        raise OptionValueError(f"expected a number >= 0, got {raw!r}")
    return seconds


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """Where one of a watcher's output streams goes: `stdout_stream.*` or `stderr_stream.*`."""

    class_name: str = option(
        stream_class,
        FILE,
        "`FileStream`, `TimedRotatingFileStream`, `WatchedFileStream`, `StdoutStream`, "
        "`FancyStdoutStream`, `JournalStream` (also as `circus.stream.NAME`), or a dotted "
        "path to your own class. Without it, a `filename` means `FileStream`; with no "
        "stream option at all, see Child output.",
        key="class",
    )
    filename: str | None = option(
        file_path,
        None,
        "File streams: the file (appended to; relative to the arbiter's directory; "
        "`$(circus.wid)` gives each process its own file).",
    )
    max_bytes: int = option(
        integer(0),
        0,
        "`FileStream`: rotate before the file would exceed this size (0 = never; "
        "needs `backup_count`).",
    )
    backup_count: int = option(
        integer(0),
        0,
        "Rotated files kept: `FileStream` (`NAME.1`...; 0 = no rotation), "
        "`TimedRotatingFileStream` (`NAME.TIME`; 0 = keep all).",
    )
    time_format: str | None = option(
        optional_text,
        None,
        "File and stdout streams: start each line with the time in this strftime format.",
    )
    rotate_when: str = option(
        rotate_when,
        "H",
        "`TimedRotatingFileStream`: unit of the interval: S, M, H, D, MIDNIGHT, W0-W6 "
        "(weekday, 0 = Monday); any case.",
    )
    rotate_interval: int = option(
        integer(1), 1, "`TimedRotatingFileStream`: rotate every this many units."
    )
    utc: bool = option(
        boolean, False, "`TimedRotatingFileStream`: UTC times for rotation and file names."
    )
    refresh_time: float | None = option(
        optional_seconds,
        None,
        "Accepted from Circus 0.3 configs; no effect (moved files are noticed while writing).",
    )
    color: str | None = option(
        color,
        None,
        "`FancyStdoutStream`: red, green, yellow, blue, magenta, cyan or white "
        "(default: one picked per watcher).",
    )
    priority: int | None = option(
        syslog_priority,
        None,
        "`JournalStream`: PRIORITY of each line, 0-7 or a name (default: stdout 6 info, "
        "stderr 4 warning).",
    )
    identifier: str | None = option(
        optional_text, None, "`JournalStream`: SYSLOG_IDENTIFIER (default: the watcher's name)."
    )
    level_prefix: bool = option(
        boolean,
        True,
        "`JournalStream`: a line starting with `<N>` (sd-daemon(3)) has priority N; the "
        "prefix is removed.",
    )
    direct: bool = option(
        boolean,
        False,
        "`JournalStream`: connect the process's output straight to journald (see below).",
    )
    # Every option as written (lower-case keys without the prefix): a user class's keyword
    # arguments, and what `circusctl options` shows.
    raw: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    @property
    def is_file(self) -> bool:
        return self.class_name in FILE_CLASSES

    @property
    def is_custom(self) -> bool:
        return self.class_name not in BUILT_IN


STREAM_OPTIONS = options_of(StreamConfig)

# The options that mean something for each built-in class (refresh_time: accepted by all).
_APPLIES: Mapping[str, frozenset[str]] = {
    FILE: frozenset({"filename", "max_bytes", "backup_count", "time_format"}),
    TIMED_ROTATING_FILE: frozenset(
        {"filename", "backup_count", "time_format", "rotate_when", "rotate_interval", "utc"}
    ),
    WATCHED_FILE: frozenset({"filename", "time_format"}),
    STDOUT: frozenset({"time_format"}),
    FANCY_STDOUT: frozenset({"time_format", "color"}),
    JOURNAL: frozenset({"priority", "identifier", "level_prefix", "direct"}),
}


class StreamOptionError(ValueError):
    """A stream option that cannot be used; `key` is the option without its prefix, or None."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def parse_stream(raw: Mapping[str, str]) -> tuple[StreamConfig, list[tuple[str, str]]]:
    """From `{"class": ..., "filename": ...}` (prefix removed) to a StreamConfig.

    Returns it with (key, message) warnings; raises StreamOptionError.
    """
    values = {key.lower(): text for key, text in raw.items()}
    if "class" in values:
        class_name = _parse_one("class", values["class"])
    elif "filename" in values:
        class_name = FILE  # Circus: a filename alone means FileStream
    else:
        raise StreamOptionError(
            "class", "missing: name a class, or a filename for a FileStream"
        )
    frozen_raw = MappingProxyType(dict(values))
    if class_name not in BUILT_IN:
        # A user's class gets every option as a string keyword argument, as in Circus.
        return StreamConfig(class_name=class_name, raw=frozen_raw), []
    fields: dict[str, Any] = {}
    warnings: list[tuple[str, str]] = []
    applies = _APPLIES[class_name]
    for key, text in values.items():
        if key == "class":
            continue
        if key not in STREAM_OPTIONS:
            warnings.append((key, f"unknown option for {class_name} (ignored)"))
            continue
        field, _declared = STREAM_OPTIONS[key]
        fields[field] = _parse_one(key, text)
        if key not in applies and key != "refresh_time":
            warnings.append((key, f"has no effect with {class_name}"))
    config = StreamConfig(class_name=class_name, raw=frozen_raw, **fields)
    _check(config, warnings)
    return config, warnings


def _parse_one(key: str, text: str) -> Any:
    _field, declared = STREAM_OPTIONS[key]
    try:
        return declared.parse(text)
    except OptionValueError as exc:
        raise StreamOptionError(key, str(exc)) from None


def _check(config: StreamConfig, warnings: list[tuple[str, str]]) -> None:
    if config.is_file:
        if config.filename is None:
            raise StreamOptionError("filename", f"missing: {config.class_name} needs a file")
        directory = os.path.dirname(config.filename)
        if "$(" not in directory and not os.path.isdir(directory):
            warnings.append(
                ("filename", f"directory {directory} does not exist: output is dropped until it is")
            )
        elif "$(" not in config.filename and (problem := safe_paths.file_problem(config.filename)):
            warnings.append(("filename", f"not written, output is dropped until fixed: {problem}"))
    if config.class_name == FILE and config.max_bytes and not config.backup_count:
        warnings.append(
            ("max_bytes", "has no effect without backup_count >= 1 (as in Python's logging)")
        )


def stream_options(config: StreamConfig) -> dict[str, str]:
    """The options as written, e.g. for `circusctl options` (`class` spelled canonically)."""
    return {**config.raw, "class": config.class_name}
