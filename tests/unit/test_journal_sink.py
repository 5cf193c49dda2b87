"""JournalStream's entries, built field by field (journald itself is the system tests' job)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from circus_sd.output.journal import JournalWriter, split_level_prefix
from circus_sd.output.sink import Chunk, Origin, SinkError
from circus_sd.spawn_protocol import JournalStreamSetup

WEB2 = Origin("web", 2, 4242, "stdout")


class Recorder:
    def __init__(self, fail_after: int | None = None) -> None:
        self.entries: list[dict[str, bytes]] = []
        self.fail_after = fail_after

    def __call__(self, *fields: bytes) -> None:
        if self.fail_after is not None and len(self.entries) >= self.fail_after:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        entry = {}
        for field in fields:
            assert isinstance(field, bytes)
            key, _, value = field.partition(b"=")
            entry[key.decode()] = value
        self.entries.append(entry)


def writer(send: Recorder, **options: object) -> JournalWriter:
    settings: dict[str, object] = {
        "identifier": None, "priority": None, "level_prefix": True, "object_pid": False,
    }
    settings.update(options)
    return JournalWriter(send=send, socket_path=None, **settings)  # type: ignore[arg-type]


def chunk(data: bytes, origin: Origin = WEB2) -> Chunk:
    return Chunk([data], len(data), origin)


def test_each_line_is_one_entry_with_the_watcher_fields() -> None:
    send = Recorder()
    writer(send).write([chunk(b"hello\nworld\n")])
    assert send.entries == [
        {
            "MESSAGE": b"hello",
            "PRIORITY": b"6",
            "SYSLOG_IDENTIFIER": b"web",
            "WATCHER": b"web",
            "WID": b"2",
            "CHILD_PID": b"4242",
        },
        {
            "MESSAGE": b"world",
            "PRIORITY": b"6",
            "SYSLOG_IDENTIFIER": b"web",
            "WATCHER": b"web",
            "WID": b"2",
            "CHILD_PID": b"4242",
        },
    ]


def test_stderr_defaults_to_warning_and_priority_is_configurable() -> None:
    send = Recorder()
    writer(send).write([chunk(b"oops\n", Origin("web", 1, 7, "stderr"))])
    writer(send, priority=2).write([chunk(b"bad\n")])
    assert [e["PRIORITY"] for e in send.entries] == [b"4", b"2"]


def test_level_prefix_sets_the_priority_and_is_removed() -> None:
    send = Recorder()
    writer(send).write([chunk(b"<3>failed\n<7>detail\n<9>not a level\n<x>no\n")])
    assert [(e["PRIORITY"], e["MESSAGE"]) for e in send.entries] == [
        (b"3", b"failed"),
        (b"7", b"detail"),
        (b"6", b"<9>not a level"),
        (b"6", b"<x>no"),
    ]


def test_without_level_prefix_the_text_is_kept() -> None:
    send = Recorder()
    writer(send, level_prefix=False).write([chunk(b"<3>as is\n")])
    assert (send.entries[0]["PRIORITY"], send.entries[0]["MESSAGE"]) == (b"6", b"<3>as is")


def test_identifier_is_configurable() -> None:
    send = Recorder()
    writer(send, identifier="web-app").write([chunk(b"x\n")])
    assert send.entries[0]["SYSLOG_IDENTIFIER"] == b"web-app"
    assert send.entries[0]["WATCHER"] == b"web"


def test_object_pid_only_when_root() -> None:
    send = Recorder()
    writer(send, object_pid=True).write([chunk(b"x\n")])
    writer(send, object_pid=False).write([chunk(b"y\n")])
    assert send.entries[0]["OBJECT_PID"] == b"4242"
    assert "OBJECT_PID" not in send.entries[1]


def test_binary_and_empty_lines_are_sent_as_they_are() -> None:
    send = Recorder()
    writer(send).write([chunk(b"\xff\xfe raw\n\n")])
    assert [e["MESSAGE"] for e in send.entries] == [b"\xff\xfe raw", b""]


def test_a_failed_send_says_how_much_was_sent() -> None:
    send = Recorder(fail_after=1)
    with pytest.raises(SinkError) as caught:
        writer(send).write([chunk(b"one\ntwo\n")])
    assert caught.value.written == len(b"one\n")
    assert "cannot send to journald" in caught.value.reason


def test_lines_are_refused_when_journald_is_not_running(tmp_path: Path) -> None:
    send = Recorder()
    missing = JournalWriter(None, None, True, False, send=send, socket_path=str(tmp_path / "s"))
    with pytest.raises(SinkError) as caught:
        missing.write([chunk(b"lost?\n")])
    assert "journald is not running" in caught.value.reason
    assert send.entries == []


def test_split_level_prefix() -> None:
    assert split_level_prefix(b"<0>x", 6) == (b"x", 0)
    assert split_level_prefix(b"<5>", 6) == (b"", 5)
    assert split_level_prefix(b"<5", 6) == (b"<5", 6)


def test_direct_mode_header_is_sd_journal_stream_fds() -> None:
    setup = JournalStreamSetup(target=1, identifier="web", priority=6, level_prefix=True)
    assert setup.header() == b"web\n\n6\n1\n0\n0\n0\n"
