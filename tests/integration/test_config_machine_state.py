"""A Circus file run as Circus runs it: what depends on the machine's state fails that watcher
alone (and `--check` warns, `--strict` refuses); `$PATH` expanded in the environment; inline
comments and keys repeated across includes read as Circus reads them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from arbiter_harness import ROOT, Circus, alive, report_command, wait_until

pytestmark = pytest.mark.timeout(60)

CIRCUSCTL = ROOT / ".venv" / "bin" / "circusctl"
EX_CONFIG = 78


def _ctl(circus: Circus, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CIRCUSCTL), "--endpoint", f"ipc://{circus.tmp}/control.sock", *args],
        capture_output=True, text=True, timeout=15, check=False,
    )


def _status(circus: Circus) -> dict[str, Any]:
    result = _ctl(circus, "--json", "status", "--details")
    assert result.returncode == 0, result
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


def _missing_program_config(circus: Circus) -> tuple[Path, Path]:
    program = circus.tmp / "later" / "program"
    config = circus.write_config(f"""
        [watcher:good]
        cmd = {report_command(circus.tmp, "good")}

        [watcher:bad]
        cmd = {program} --serve
        max_retry = 2
        backoff_initial = 0.05

        [watcher:ghost]
        cmd = {report_command(circus.tmp, "ghost")}
        uid = h16-no-such-user
        max_retry = 1
        """)
    return config, program


def test_check_warns_of_a_missing_program_and_strict_refuses(circus: Circus) -> None:
    config, program = _missing_program_config(circus)

    checked = circus.run("--check", str(config))
    strict = circus.run("--check", "--strict", str(config))

    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == f"{config}: OK, 3 watcher(s)"
    assert f"warning: {config}:" in checked.stderr
    assert f"[watcher:bad] cmd: '{program}' does not exist" in checked.stderr
    assert "[watcher:ghost] uid: no user 'h16-no-such-user' exists (yet)" in checked.stderr
    assert strict.returncode == EX_CONFIG, strict.stderr
    assert f"[watcher:bad] cmd: '{program}' does not exist" in strict.stderr
    assert circus.leftovers() == []


def test_a_missing_program_fails_that_watcher_alone_until_it_exists(circus: Circus) -> None:
    config, program = _missing_program_config(circus)
    arbiter = circus.start(config)
    good = circus.reports.wait("good", 1)

    arbiter.wait_log(
        rf"bad\[1\] could not start: '{program}' does not exist; giving up after 2 failures"
    )
    arbiter.wait_log(
        r"ghost\[1\] could not start: uid: expected a user name or uid, but no user "
        r"'h16-no-such-user' exists; giving up"
    )
    status = wait_until(
        lambda: (s := _status(circus))["details"]["bad"]["reason"] and s,
        5.0, "bad to be given up, with the reason", arbiter.log_tail,
    )
    assert f"'{program}' does not exist" in status["details"]["bad"]["reason"]
    assert "no user 'h16-no-such-user'" in status["details"]["ghost"]["reason"]
    assert status["statuses"]["good"] == "active"
    assert alive(good["pid"])
    assert circus.reports.wids("ghost") == []

    # Fixed on the machine: `circusctl start bad` runs it, with nothing else restarted.
    program.parent.mkdir()
    command = report_command(circus.tmp, "bad").replace("$(circus.wid)", "1")
    program.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
    program.chmod(0o755)
    started = _ctl(circus, "start", "bad")
    assert started.returncode == 0, started
    bad = circus.reports.wait("bad", 1, detail=arbiter.log_tail)
    assert bad["argv"][-1] == "--serve"
    wait_until(lambda: _status(circus)["statuses"]["bad"] == "active", 5.0, "bad to be active")
    assert circus.reports.get("good", 1) == good


def test_environment_comments_and_includes_read_as_circus_reads_them(circus: Circus) -> None:
    (circus.tmp / "one.ini").write_text(
        "[watcher:web]\nnumprocesses = 5\n[env:web]\nFROM = one\nLATER = one\n"
    )
    (circus.tmp / "two.ini").write_text("[env:web]\nFROM = two\n")
    config = circus.write_config(f"""
        [circus]
        include = one.ini two.ini ; both, in this order

        [watcher:web]
        cmd = {report_command(circus.tmp, "web")}
        numprocesses = 2 ; two, whatever one.ini says

        [env:web]
        PATH = $PATH:/opt/h16/bin
        TOOLS = ${{PATH}}
        BLANK = [$H16_NEVER_SET]
        """)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(circus.tmp)}
    checked = circus.run("--check", str(config), env=env)
    assert checked.returncode == 0, checked.stderr
    assert "[env:web] FROM: set again: ignored" in checked.stderr
    assert "env BLANK: $H16_NEVER_SET is set neither" in checked.stderr

    arbiter = circus.start(config, env=env)
    reports = [circus.reports.wait("web", wid) for wid in (1, 2)]
    environ = reports[0]["env"]
    assert environ["PATH"] == "/usr/bin:/bin:/opt/h16/bin"
    assert environ["TOOLS"] == "/usr/bin:/bin:/opt/h16/bin"
    assert environ["BLANK"] == "[]"
    assert (environ["FROM"], environ["LATER"]) == ("one", "one")
    assert len(arbiter.worker_pids()) == 2
    assert circus.reports.wids("web") == [1, 2]
