"""`stdout_stream.*` / `stderr_stream.*`: Circus's classes and options, parsed into StreamConfig."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from circus_sd.config import ConfigError, load_config
from circus_sd.config.model import WatcherConfig
from circus_sd.config.streams import (
    FILE,
    JOURNAL,
    STDOUT,
    TIMED_ROTATING_FILE,
    WATCHED_FILE,
    StreamConfig,
    StreamOptionError,
    parse_stream,
    stream_options,
)
from circus_sd.output.router import effective_stream

ENV: Mapping[str, str] = {"PATH": os.defpath}


def load_watcher(tmp_path: Path, body: str) -> tuple[WatcherConfig, list[str]]:
    path = tmp_path / "circus.ini"
    path.write_text("[watcher:web]\ncmd = sleep 1\n" + textwrap.dedent(body).lstrip())
    config, warnings = load_config(str(path), ENV)
    return config.watchers[0], [str(w) for w in warnings]


def load_error(tmp_path: Path, body: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_watcher(tmp_path, body)
    return caught.value


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("FileStream", FILE),
        ("filestream", FILE),
        ("circus.stream.FileStream", FILE),
        ("circus.stream.file_stream.WatchedFileStream", WATCHED_FILE),
        ("circus.stream.TimedRotatingFileStream", TIMED_ROTATING_FILE),
        ("StdoutStream", STDOUT),
        ("circus.stream.StdoutStream", STDOUT),
        ("FancyStdoutStream", "FancyStdoutStream"),
        ("JournalStream", JOURNAL),
    ],
)
def test_circus_class_names_in_every_spelling(spelling: str, expected: str) -> None:
    raw = {"class": spelling, "filename": "/tmp/x.log"}
    if expected not in (FILE, WATCHED_FILE, TIMED_ROTATING_FILE):
        raw = {"class": spelling}
    config, _ = parse_stream(raw)
    assert config.class_name == expected
    assert not config.is_custom


def test_a_user_class_gets_every_option_as_written(tmp_path: Path) -> None:
    web, warnings = load_watcher(tmp_path, """
        stdout_stream.class = mypkg.streams.Shipper
        stdout_stream.url = http://logs.example/in
        stdout_stream.max_bytes = not-a-number
    """)
    assert warnings == []
    stream = web.stdout_stream
    assert stream is not None and stream.is_custom
    assert stream.class_name == "mypkg.streams.Shipper"
    assert dict(stream.raw) == {
        "class": "mypkg.streams.Shipper",
        "url": "http://logs.example/in",
        "max_bytes": "not-a-number",
    }


def test_an_unknown_bare_class_is_an_error_at_its_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, "stdout_stream.class = SyslogStream\n")
    assert (error.line, error.section, error.option) == (3, "watcher:web", "stdout_stream.class")
    assert "FileStream" in error.message and "dotted path" in error.message


def test_a_filename_alone_means_a_file_stream(tmp_path: Path) -> None:
    web, warnings = load_watcher(tmp_path, f"stdout_stream.filename = {tmp_path}/out.log\n")
    assert warnings == []
    assert web.stdout_stream == StreamConfig(
        class_name=FILE,
        filename=f"{tmp_path}/out.log",
        raw=web.stdout_stream.raw if web.stdout_stream else {},
    )
    assert web.stderr_stream is None


def test_options_without_a_class_or_filename_are_an_error(tmp_path: Path) -> None:
    error = load_error(tmp_path, "stderr_stream.time_format = %H\n")
    assert error.option == "stderr_stream.class"
    assert error.line == 1  # the section: there is no class line to point at
    assert "missing" in error.message


def test_file_streams_need_a_filename(tmp_path: Path) -> None:
    error = load_error(tmp_path, "stdout_stream.class = WatchedFileStream\n")
    assert error.option == "stdout_stream.filename"
    assert "needs a file" in error.message


def test_file_stream_options(tmp_path: Path) -> None:
    web, warnings = load_watcher(tmp_path, f"""
        stdout_stream.class = FileStream
        stdout_stream.filename = {tmp_path}/out.log
        stdout_stream.max_bytes = 1048576
        stdout_stream.backup_count = 5
        stdout_stream.time_format = %Y-%m-%d %H:%M:%S
        stdout_stream.refresh_time = 0.3
    """)
    assert warnings == []
    stream = web.stdout_stream
    assert stream is not None
    assert (stream.max_bytes, stream.backup_count) == (1048576, 5)
    assert stream.time_format == "%Y-%m-%d %H:%M:%S"
    assert stream.refresh_time == 0.3


def test_relative_filenames_are_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config, _ = parse_stream({"filename": "logs/../out.log"})
    assert config.filename == str(tmp_path / "out.log")


def test_timed_rotation_options_case_insensitive_and_utc_a_real_boolean(tmp_path: Path) -> None:
    web, warnings = load_watcher(tmp_path, f"""
        stderr_stream.class = TimedRotatingFileStream
        stderr_stream.filename = {tmp_path}/err.log
        stderr_stream.rotate_when = midnight
        stderr_stream.rotate_interval = 2
        stderr_stream.backup_count = 7
        stderr_stream.utc = False
    """)
    assert warnings == []
    stream = web.stderr_stream
    assert stream is not None
    assert (stream.rotate_when, stream.rotate_interval, stream.backup_count) == ("MIDNIGHT", 2, 7)
    assert stream.utc is False  # Circus: bool("False") is True
    assert parse_stream({"filename": "/x", "class": "TimedRotatingFileStream", "utc": "yes",
                         "rotate_when": "w6"})[0].utc is True


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("rotate_when", "fortnight", "S, M, H, D, MIDNIGHT or W0-W6"),
        ("rotate_when", "W7", "S, M, H, D, MIDNIGHT or W0-W6"),
        ("rotate_interval", "0", "integer >= 1"),
        ("utc", "maybe", "boolean"),
        ("backup_count", "-1", "integer >= 0"),
    ],
)
def test_bad_values_name_the_file_line_and_option(
    tmp_path: Path, key: str, value: str, expected: str
) -> None:
    error = load_error(tmp_path, f"""
        stderr_stream.class = TimedRotatingFileStream
        stderr_stream.filename = {tmp_path}/err.log
        stderr_stream.{key} = {value}
    """)
    assert str(error).startswith(
        f"{tmp_path}/circus.ini:5: [watcher:web] stderr_stream.{key}: "
    )
    assert expected in error.message


def test_options_of_another_class_and_unknown_options_are_warnings(tmp_path: Path) -> None:
    web, warnings = load_watcher(tmp_path, f"""
        stdout_stream.class = WatchedFileStream
        stdout_stream.filename = {tmp_path}/out.log
        stdout_stream.max_bytes = 100
        stdout_stream.colour = red
    """)
    path = tmp_path / "circus.ini"
    assert warnings == [
        f"{path}:5: [watcher:web] stdout_stream.max_bytes: has no effect with WatchedFileStream",
        f"{path}:6: [watcher:web] stdout_stream.colour: unknown option for WatchedFileStream "
        "(ignored)",
    ]
    assert web.extra == {}


def test_max_bytes_without_backups_is_a_warning(tmp_path: Path) -> None:
    _web, warnings = load_watcher(tmp_path, f"""
        stdout_stream.filename = {tmp_path}/out.log
        stdout_stream.max_bytes = 100
    """)
    assert len(warnings) == 1 and "without backup_count" in warnings[0]


def test_a_missing_directory_is_a_warning_not_an_error(tmp_path: Path) -> None:
    _web, warnings = load_watcher(tmp_path, f"stdout_stream.filename = {tmp_path}/no/out.log\n")
    assert len(warnings) == 1 and "does not exist" in warnings[0]


def test_stream_options_are_not_unsupported_any_more(tmp_path: Path) -> None:
    _web, warnings = load_watcher(tmp_path, "stdout_stream.class = StdoutStream\n")
    assert warnings == []


def test_journal_stream_options(tmp_path: Path) -> None:
    web, warnings = load_watcher(tmp_path, """
        stdout_stream.class = JournalStream
        stdout_stream.priority = notice
        stdout_stream.identifier = web-app
        stdout_stream.level_prefix = false
        stdout_stream.direct = true
        stderr_stream.class = JournalStream
        stderr_stream.priority = 3
    """)
    assert warnings == []
    out, err = web.stdout_stream, web.stderr_stream
    assert out is not None and err is not None
    assert (out.priority, out.identifier, out.level_prefix, out.direct) == (
        5, "web-app", False, True,
    )
    assert (err.priority, err.identifier, err.level_prefix, err.direct) == (3, None, True, False)
    assert hash(out) != hash(err)  # usable as a key


@pytest.mark.parametrize(("key", "value"), [("priority", "8"), ("priority", "loud")])
def test_bad_journal_values(key: str, value: str) -> None:
    with pytest.raises(StreamOptionError) as caught:
        parse_stream({"class": "JournalStream", key: value})
    assert caught.value.key == key


def test_fancy_colour_is_checked() -> None:
    assert parse_stream({"class": "FancyStdoutStream", "color": "Green"})[0].color == "green"
    with pytest.raises(StreamOptionError):
        parse_stream({"class": "FancyStdoutStream", "color": "mauve"})


def test_max_line_and_backpressure_timeout(tmp_path: Path) -> None:
    web, _ = load_watcher(tmp_path, "")
    assert (web.max_line, web.backpressure_timeout) == (65536, 5.0)
    web, _ = load_watcher(tmp_path, "max_line = 1000\nbackpressure_timeout = 0.5\n")
    assert (web.max_line, web.backpressure_timeout) == (1000, 0.5)
    assert load_error(tmp_path, "max_line = 0\n").option == "max_line"


def test_stream_options_render_back_as_written() -> None:
    config, _ = parse_stream({"class": "circus.stream.FileStream", "filename": "/var/log/a"})
    assert stream_options(config) == {"class": "FileStream", "filename": "/var/log/a"}


# -- the default ---------------------------------------------------------------------------------


def test_default_stream_is_the_journal_under_systemd_else_the_arbiters_output() -> None:
    web = WatcherConfig(name="web", cmd="sleep 1")
    under_journal = effective_stream(web, "stdout", journal_default=True)
    assert under_journal is not None and under_journal.class_name == JOURNAL
    for stream in ("stdout", "stderr"):
        plain = effective_stream(web, stream, journal_default=False)
        assert plain is not None and plain.class_name == STDOUT


def test_closed_streams_go_nowhere_whatever_their_stream_says() -> None:
    stream = StreamConfig(class_name=STDOUT)
    web = dataclasses.replace(
        WatcherConfig(name="web", cmd="sleep 1"),
        close_child_stdout=True,
        stdout_stream=stream,
        stderr_stream=stream,
    )
    assert effective_stream(web, "stdout", journal_default=False) is None
    assert effective_stream(web, "stderr", journal_default=False) == stream
