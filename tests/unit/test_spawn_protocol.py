"""The spawn protocol read by both ends: a request decoded in the real spawner's interpreter (a
bare `python -IS` running the program fork_spawner sends) has every field the arbiter set."""

from __future__ import annotations

import inspect
import io
import marshal
import pickle
import resource
import subprocess
import sys
from typing import Any

import pytest

from circus_sd.spawn_protocol import (
    JournalStreamSetup,
    SpawnRequest,
    decode,
    encode,
    exec_status_errno,
    exec_status_report,
    parse_exec_status,
)
from circus_sd.spawner import spawner_program

# Every field away from its default, so that a field one end dropped or renamed shows.
FULL = SpawnRequest(
    executable="/usr/bin/env",
    argv=("env", "-0", "é"),
    env={"PATH": "/usr/bin", "LANG": "C.UTF-8"},
    cwd="/tmp",
    uid=1000,
    gid=1001,
    groups=(1001, 27),
    user="web",
    umask=0o027,
    rlimits=((resource.RLIMIT_NOFILE, 1024, 4096), (resource.RLIMIT_CORE, 0, 0)),
    fd_targets=(1, 2, 3),
    inherit=frozenset({0, 5}),
    new_session=False,
    env_own_pid=("LISTEN_PID",),
    journal_streams=(
        JournalStreamSetup(1, "web", 6, True, socket_path="/run/j/stdout"),
        JournalStreamSetup(target=2, identifier="web-err", priority=3, level_prefix=False),
    ),
    cgroup="/sys/fs/cgroup/circus/web/1",
)

# Run in the spawner's interpreter after its modules: each decoded message, as builtin values
# (marshal: the spawner's interpreter has no pickle.py), and the modules it holds.
_IN_THE_SPAWNER = b'''
import marshal

def fields(value):
    if isinstance(value, (server.SpawnRequest, server.JournalStreamSetup)):
        return (type(value).__name__, {k: fields(v) for k, v in vars(value).items()})
    if isinstance(value, (list, tuple)):
        return type(value)(fields(v) for v in value)
    return value

messages = marshal.loads(sys.stdin.buffer.read())
decoded = [fields(server.decode(message)) for message in messages]
same = server.SpawnRequest is protocol.SpawnRequest
sys.stdout.buffer.write(marshal.dumps((decoded, same, sorted(sys.modules))))
'''


def fields(value: Any) -> Any:
    """As `_IN_THE_SPAWNER` does, here."""
    if isinstance(value, (SpawnRequest, JournalStreamSetup)):
        return (type(value).__name__, {k: fields(v) for k, v in vars(value).items()})
    if isinstance(value, (list, tuple)):
        return type(value)(fields(v) for v in value)
    return value


def in_the_spawner(messages: list[bytes]) -> tuple[list[Any], bool, list[str]]:
    program = spawner_program(_IN_THE_SPAWNER)
    done = subprocess.run(
        [sys.executable, "-IS", "-c", program],
        input=marshal.dumps(messages),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    decoded, same, modules = marshal.loads(done.stdout)
    return decoded, same, modules


def test_the_full_request_sets_every_field() -> None:
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(SpawnRequest).parameters.items()
    }
    assert set(vars(FULL)) == set(defaults)
    assert [name for name, default in defaults.items() if vars(FULL)[name] == default] == []


def test_the_spawner_decodes_what_the_arbiter_encodes() -> None:
    minimal = SpawnRequest("/bin/true", ("true",), {})
    messages = [encode(FULL), encode([FULL, minimal]), encode(minimal)]
    decoded, same, modules = in_the_spawner(messages)
    assert decoded == [fields(FULL), fields([FULL, minimal]), fields(minimal)]
    # The server's classes are the protocol module's, run from the same source.
    assert same
    # Standard library only, and lean: every clone copies the spawner's pages.
    ours = [name for name in modules if name.startswith("circus_sd")]
    assert ours == ["circus_sd.spawn_protocol", "circus_sd.spawn_server"]
    assert not {"dataclasses", "typing", "pickle", "socket", "selectors", "enum"} & set(modules)


def test_decoding_here_gives_the_same_request() -> None:
    assert decode(encode(FULL)) == FULL
    assert decode(encode([FULL, FULL])) == [FULL, FULL]


def test_decoding_refuses_any_other_class() -> None:
    with pytest.raises(pickle.UnpicklingError, match="not part of the spawn protocol"):
        decode(pickle.dumps([FULL, io.BytesIO]))


def test_exec_status_report_reads_back() -> None:
    report = exec_status_report("chdir", 2, "No such file or directory")
    assert parse_exec_status(report) == "working_dir: No such file or directory (errno 2)"
    assert exec_status_errno(report) == 2
    assert parse_exec_status(b"") is None
    unknown = exec_status_report("exec", 0, "bad: value")
    assert parse_exec_status(unknown) == "exec: bad: value"
    assert exec_status_errno(unknown) is None
