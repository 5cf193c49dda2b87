"""The state one arbiter program hands to the next (handover.py): what the check refuses, written
from a real config file and a watcher that ran a few steps."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from circus_sd import handover as handovers
from circus_sd import reexec
from circus_sd.config.loader import load_config
from circus_sd.config.process_env import ChildDefaults
from circus_sd.handover import HANDOVER_VERSION, CarriedPipe, CarriedProcess, Handover
from circus_sd.watcher import Watcher

CONFIG = """\
[watcher:web]
cmd = /bin/sleep 100
numprocesses = 2
stdout_stream.class = FileStream
stdout_stream.filename = {log}

[env:web]
PATH = $PATH:/opt/bin
"""


def a_handover(tmp_path: Path) -> Handover:
    path = tmp_path / "circus.ini"
    path.write_text(CONFIG.format(log=tmp_path / "web.log"))
    config, _warnings = load_config(str(path))
    watcher = Watcher(config.watchers[0])
    watcher.start(100.0)
    return Handover(
        version=HANDOVER_VERSION,
        code_version="0.1.0",
        config=config,
        watchers={"web": watcher},
        timers=[("web", ("restart", 1), 123.5)],
        processes=[CarriedProcess(41, "web", 1, 7, 1.7e9, "execed")],
        pipes=[CarriedPipe(41, "web", 1, "stdout", 9, b"half a li")],
        sockets={},
        unused_sockets={},
        endpoint_locks={"/run/circus-sd/control.sock.lock": 11},
        pidfile=None,
        notify_directory=None,
        notify_count=0,
        systemd_env={},
        defaults=ChildDefaults({"PATH": "/usr/bin"}, (1024, 4096), True),
        started_at=1.7e9,
        sessions={},
        leaves={},
        draining=[],
        dropped={"web": (3, 300)},
        crash_reexecs=[],
        generation=1,
        reason="test",
    )


def test_a_handover_comes_back_as_it_went(tmp_path: Path) -> None:
    sent = a_handover(tmp_path)
    got = handovers.load(handovers.dump(sent))
    assert got.config == sent.config
    assert dict(got.config.watchers[0].env) == dict(sent.config.watchers[0].env)
    watcher = got.watchers["web"]
    assert vars(watcher).keys() == vars(sent.watchers["web"]).keys()
    assert watcher.phase == sent.watchers["web"].phase
    assert got.pipes[0].held == b"half a li"
    assert got.timers == [("web", ("restart", 1), 123.5)]
    assert sorted(got.fds()) == [7, 9, 11]


def test_another_version_is_refused_with_both_versions_named(tmp_path: Path) -> None:
    sent = dataclasses.replace(a_handover(tmp_path), version=HANDOVER_VERSION + 1)
    with pytest.raises(handovers.HandoverError, match=f"version {HANDOVER_VERSION + 1}.*"
                       f"reads version {HANDOVER_VERSION}"):
        handovers.load(handovers.dump(sent))


def test_a_watcher_of_another_shape_is_refused_by_name(tmp_path: Path) -> None:
    sent = a_handover(tmp_path)
    del sent.watchers["web"].restarts
    sent.watchers["web"].added_later = 1
    with pytest.raises(handovers.HandoverError, match=r"'web'.*missing: restarts.*added_later"):
        handovers.load(handovers.dump(sent))


def test_a_record_missing_a_field_without_default_is_refused(tmp_path: Path) -> None:
    sent = a_handover(tmp_path)
    del sent.processes[0].spawn_id
    with pytest.raises(handovers.HandoverError, match="CarriedProcess: no spawn_id"):
        handovers.load(handovers.dump(sent))


def test_a_field_added_with_a_default_takes_it(tmp_path: Path) -> None:
    # As an upgrade that adds an option: the old program's state has no such field.
    sent = a_handover(tmp_path)
    del sent.processes[0].notify_path
    object.__delattr__(sent.config.watchers[0], "max_age")
    got = handovers.load(handovers.dump(sent))
    assert got.processes[0].notify_path is None
    assert got.config.watchers[0].max_age == 0


def test_what_is_not_a_handover_is_refused() -> None:
    with pytest.raises(handovers.HandoverError, match="cannot read the saved state"):
        handovers.load(b"not a pickle")
    with pytest.raises(handovers.HandoverError, match="not a circus-sd handover"):
        handovers.load(pickle.dumps({"version": HANDOVER_VERSION}))


def test_crashes_re_execute_a_few_times_a_minute_then_no_more() -> None:
    assert reexec.crash_budget_left([], 1000.0)
    assert reexec.crash_budget_left([950.0, 960.0], 1000.0)
    assert not reexec.crash_budget_left([950.0, 960.0, 990.0], 1000.0)
    # The window slides: the first of those three is more than a minute old now.
    assert reexec.crash_budget_left([950.0, 960.0, 990.0], 1011.0)


def test_only_a_sealed_handover_memfd_is_read(tmp_path: Path) -> None:
    # As an attacker would try: a pickle of their own on stdin, named as the check's fd.
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps({"version": HANDOVER_VERSION}))
    with evil.open("rb") as stdin:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "circus-sd")], stdin=stdin, capture_output=True,
            text=True, env={**os.environ, reexec.CHECK_FD_ENV: "0"}, timeout=30, check=False,
        )
    assert result.returncode == 1
    assert "fd 0 is not a circus-sd handover" in result.stderr
    # A memfd of that name, but writable still (not sealed): refused too.
    unsealed = os.memfd_create(reexec.MEMFD_NAME)
    try:
        os.write(unsealed, b"{}\n")
        os.lseek(unsealed, 0, os.SEEK_SET)
        with pytest.raises(OSError, match="not sealed"):
            reexec._read_fd(unsealed)
    finally:
        os.close(unsealed)
    sealed = reexec._memfd(b"the state")
    try:
        assert reexec._read_fd(sealed) == b"the state"
        with pytest.raises(PermissionError):
            os.write(sealed, b"changed")
    finally:
        os.close(sealed)
