"""Lines about watchers and processes: stable MESSAGE_IDs, the journal fields they carry, and the
same text as before for every output but journald."""

from __future__ import annotations

import ast
import io
import logging
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from circus_sd import logging_setup
from circus_sd.actions import Action, Log, Spawn
from circus_sd.config.model import ArbiterConfig, WatcherConfig
from circus_sd.journal_log import JournalLogHandler, about
from circus_sd.message_ids import MessageId
from circus_sd.watcher import Watcher

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "circus_sd"


# -- the ids -----------------------------------------------------------------------------------


def test_message_ids_are_unique_128_bit_ids() -> None:
    values = [kind.value for kind in MessageId]
    assert len(values) == len(set(values)), "two kinds share a MESSAGE_ID"
    for kind in MessageId:
        # journald's form: 32 lowercase hex digits, not the null id.
        assert re.fullmatch(r"[0-9a-f]{32}", kind.value), kind
        assert int(kind.value, 16) != 0, kind


def _kinds_used_in_source() -> set[str]:
    used: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "MessageId"
            ):
                used.add(node.attr)
    return used


def test_every_kind_is_logged_somewhere_and_every_one_logged_exists() -> None:
    used = _kinds_used_in_source()
    assert used == {kind.name for kind in MessageId}


def test_every_log_action_names_its_kind() -> None:
    """`Log(level, message, kind, ...)`: no Log built without a MessageId, in any module."""
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Log":
                kind = node.args[2] if len(node.args) > 2 else None
                assert kind is not None, f"{path}:{node.lineno}: Log without a kind"
                text = ast.unparse(kind)
                assert text.startswith("MessageId.") or text == "kind", f"{path}:{node.lineno}"


# | `MESSAGE_ID` | `KIND` | meaning | priority |
ROW = r"\| `([0-9a-f]{32})` \| `([A-Z_]+)` \| (.+) \| (\w+(?: \w+)*) \|"


def test_the_readme_documents_every_message_id_with_its_meaning_and_priority() -> None:
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        found = re.fullmatch(ROW, line)
        if found:
            rows[found[2]] = (found[1], found[3], found[4])
    assert set(rows) == {kind.name for kind in MessageId}
    priorities = {"debug", "info", "notice", "warning", "err", "crit"}
    for kind in MessageId:
        message_id, meaning, priority = rows[kind.name]
        assert message_id == kind.value, kind
        assert meaning.strip(), kind
        assert set(priority.replace(" or ", " ").split()) <= priorities, (kind, priority)


# -- what the watcher says about a process -----------------------------------------------------


class Driver:
    """Plays the arbiter for one watcher on a fake clock: answers spawns, keeps the Logs."""

    def __init__(self, **options: object) -> None:
        config = WatcherConfig(name="web", cmd="/bin/false", **options)  # type: ignore[arg-type]
        self.watcher = Watcher(config, rng=random.Random(3))
        self.now = 100.0
        self.next_pid = 500
        self.logs: list[Log] = []
        self.spawns: list[Spawn] = []

    def apply(self, actions: list[Action]) -> None:
        self.logs += [a for a in actions if isinstance(a, Log)]
        self.spawns += [a for a in actions if isinstance(a, Spawn)]

    def answer_spawns(self) -> list[int]:
        pids = []
        while self.spawns:
            spawn = self.spawns.pop(0)
            self.next_pid += 1
            pids.append(self.next_pid)
            self.apply(self.watcher.spawned(spawn.spawn_id, self.next_pid, self.now))
        return pids


def test_an_exit_and_its_restart_carry_the_worker_and_the_pid() -> None:
    d = Driver(numprocesses=2, backoff_initial=0.5)
    d.apply(d.watcher.start(d.now))
    first, second = d.answer_spawns()
    assert [(log.kind, log.wid, log.pid) for log in d.logs] == [
        (MessageId.WATCHER_STARTING, None, None),
        (MessageId.PROCESS_SPAWNED, 1, first),
        (MessageId.PROCESS_SPAWNED, 2, second),
        (MessageId.WATCHER_ACTIVE, None, None),
    ]
    d.logs.clear()
    d.now += 0.2  # before min_uptime: a failed start, restarted after a backoff
    d.apply(d.watcher.exited(second, 1, d.now, None))
    (said,) = d.logs
    assert (said.kind, said.wid, said.pid, said.level) == (
        MessageId.RESTART_SCHEDULED, 2, second, logging.WARNING
    )
    assert said.message.startswith(f"web[2] pid {second} exited with status 1 after 0.20 s")


# -- the journal handler -----------------------------------------------------------------------


class Sent:
    """Stands for systemd's sendv: keeps each entry's fields."""

    def __init__(self, fail: bool = False) -> None:
        self.entries: list[dict[str, str]] = []
        self.fail = fail

    def __call__(self, *fields: str) -> None:
        if self.fail:
            raise OSError(111, "Connection refused")
        self.entries.append(dict(field.split("=", 1) for field in fields))


@pytest.fixture
def log() -> Iterator[logging.Logger]:
    logger = logging.getLogger("circus_sd.test_lifecycle_log")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


def test_a_line_about_a_process_is_sent_with_its_fields(log: logging.Logger) -> None:
    sent = Sent()
    handler = JournalLogHandler("circus-sd", send=sent)
    handler.setFormatter(logging.Formatter(logging_setup.JOURNAL_FORMAT))
    log.addHandler(handler)
    log.warning(
        "%s; restarting in 0.50 s", "web[2] pid 77 exited with 1",
        extra=about(MessageId.RESTART_SCHEDULED, "web", 2, 77),
    )
    log.info("circus-sd running 1 watcher(s)")
    subject, plain = sent.entries
    assert subject["MESSAGE"] == "WARNING web[2] pid 77 exited with 1; restarting in 0.50 s"
    assert {k: subject[k] for k in ("PRIORITY", "SYSLOG_IDENTIFIER", "MESSAGE_ID")} == {
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "circus-sd",
        "MESSAGE_ID": MessageId.RESTART_SCHEDULED.value,
    }
    assert (subject["WATCHER"], subject["WID"], subject["CHILD_PID"]) == ("web", "2", "77")
    assert subject["CODE_FUNC"] == "test_a_line_about_a_process_is_sent_with_its_fields"
    assert "OBJECT_PID" not in subject  # the pid may be reaped and reused by then
    assert plain["PRIORITY"] == "6"
    assert not {"MESSAGE_ID", "WATCHER", "WID", "CHILD_PID"} & set(plain)


def test_a_traceback_stays_in_its_entry(log: logging.Logger) -> None:
    sent = Sent()
    log.addHandler(JournalLogHandler("circus-sd", send=sent))
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("hook failed", extra=about(MessageId.HOOK_FAILED, "web"))
    (entry,) = sent.entries
    assert entry["MESSAGE"].startswith("hook failed\nTraceback")
    assert entry["MESSAGE"].endswith("ValueError: boom")
    assert (entry["PRIORITY"], entry["WATCHER"]) == ("3", "web")


def test_an_entry_journald_refuses_goes_to_stderr_with_its_priority(
    log: logging.Logger,
) -> None:
    stderr = io.StringIO()
    log.addHandler(JournalLogHandler("circus-sd", send=Sent(fail=True), fallback=lambda: stderr))
    log.error("web: stopped", extra=about(MessageId.WATCHER_STOPPED, "web"))
    assert stderr.getvalue() == "<3>web: stopped\n"


def test_an_entry_the_journal_library_cannot_encode_still_reaches_stderr(
    log: logging.Logger,
) -> None:
    """Not only OSError: whatever the send raises, the record goes on (the writer thread
    that runs the handler must live)."""

    def unencodable(*fields: str) -> None:
        raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")

    stderr = io.StringIO()
    log.addHandler(JournalLogHandler("circus-sd", send=unencodable, fallback=lambda: stderr))
    log.warning("web: /srv/\udcff gone", extra=about(MessageId.WATCHER_STOPPED, "web"))
    log.warning("web: still logging")
    assert stderr.getvalue().endswith("<4>web: still logging\n")


def test_other_outputs_write_the_same_text_as_without_fields(log: logging.Logger) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("circus-sd %(levelname)s %(message)s"))
    log.addHandler(handler)
    subject = about(MessageId.PROCESS_READY, "web", 1, 5)
    log.info("%s", "web[1] pid 5 ready (READY=1)", extra=subject)
    log.info("%s", "web[1] pid 5 ready (READY=1)")
    first, second = stream.getvalue().splitlines()
    assert first == second == "circus-sd INFO web[1] pid 5 ready (READY=1)"


def test_under_journald_the_log_is_sent_natively_behind_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    monkeypatch.setattr(logging_setup, "stderr_is_journal", lambda: True)
    monkeypatch.setattr(logging_setup, "journal_reachable", lambda: True)
    try:
        logging_setup.configure_logging(ArbiterConfig(), level="info", output="-")
        writer = logging_setup._writer
        assert writer is not None
        (target,) = writer.targets
        assert isinstance(target, JournalLogHandler)
        assert [type(h) for h in root.handlers] == [logging_setup.DroppingQueueHandler]
    finally:
        assert logging_setup.stop_logging(10.0)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
