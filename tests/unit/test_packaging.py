"""The Debian package's generated files and the code paths it relies on (tests/system/test_deb.py
installs the real package)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from circus_sd import endpoints
from circus_sd.config.loader import load_config
from circus_sd.ctl.commandline import known_commands

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging" / "deb"


def test_the_changelog_and_pyproject_agree_on_the_version() -> None:
    changelog = (PACKAGING / "debian" / "changelog").read_text().splitlines()[0]
    pyproject = (ROOT / "pyproject.toml").read_text()
    debian = re.match(r"circus-sd \(([^)]+)\)", changelog)
    python = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert debian and python
    assert debian.group(1) == python.group(1)


@pytest.fixture(scope="module")
def completion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("bash"):
        pytest.skip("no bash")
    out = subprocess.run(
        [sys.executable, str(PACKAGING / "generate.py"), "completion"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    directory = tmp_path_factory.mktemp("completion")
    (directory / "circusctl").write_text(out)
    # A stand-in circusctl: answers `list` and records how it was called.
    fake = directory / "fakectl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {directory}/calls\necho web,worker,db\n')
    fake.chmod(0o755)
    return directory


def complete(completion: Path, line: str) -> list[str]:
    script = (
        f"source {completion}/circusctl; COMP_LINE=$1; COMP_POINT=${{#1}}; _circusctl; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(
        ["bash", "-c", script, "-", line], capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_completion_offers_every_command_of_the_registry(completion: Path) -> None:
    assert complete(completion, "circusctl ") == known_commands()
    assert complete(completion, "circusctl st") == ["start", "stats", "status", "stop"]
    assert complete(completion, "circusctl help reloadc") == ["reloadconfig"]


def test_completion_offers_a_commands_switches_and_their_choices(completion: Path) -> None:
    assert complete(completion, "circusctl --ti") == ["--timeout"]
    assert complete(completion, "circusctl add --") == [
        "--endpoint", "--pubsub-endpoint", "--timeout", "--json", "--prettify", "--help",
        "--version", "--start", "--waiting",
    ]  # fmt: skip
    assert complete(completion, "circusctl stop --match ") == ["simple", "glob", "regex"]
    assert complete(completion, "circusctl --timeout ") == []


def test_completion_asks_the_arbiter_for_watcher_names(completion: Path) -> None:
    ctl = f"{completion}/fakectl"
    assert complete(completion, f"{ctl} incr w") == ["web", "worker"]
    assert complete(completion, f"{ctl} --endpoint ipc:///run/x.sock stop --match glob ") == [
        "web", "worker", "db",
    ]  # fmt: skip
    assert complete(completion, f"{ctl} add ") == []  # a new name
    assert complete(completion, f"{ctl} incr web ") == []  # a number
    calls = (completion / "calls").read_text().splitlines()
    assert calls == ["--timeout 2 list", "--endpoint ipc:///run/x.sock --timeout 2 list"]


def test_a_user_without_an_arbiter_of_their_own_reaches_the_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, own = tmp_path / "system", tmp_path / "user"
    (own / "circus-sd").mkdir(parents=True)
    system.mkdir()
    monkeypatch.setattr(endpoints, "SYSTEM_RUNTIME_DIR", str(system))
    monkeypatch.setattr(endpoints.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(own))
    users = f"ipc://{own}/circus-sd/control.sock"
    assert endpoints.client_default_endpoint() == users  # neither runs: the user's, as before
    (system / "control.sock").touch()
    assert endpoints.client_default_endpoint() == f"ipc://{system}/control.sock"
    (own / "circus-sd" / "control.sock").touch()
    assert endpoints.client_default_endpoint() == users  # the user's own arbiter wins
    assert endpoints.default_endpoint() == users  # what an arbiter binds is unchanged


def test_an_empty_drop_in_directory_is_not_a_warning(tmp_path: Path) -> None:
    main = tmp_path / "circus.ini"
    main.write_text("[circus]\ninclude_dir = conf.d\n")
    (tmp_path / "conf.d").mkdir()
    assert load_config(str(main))[1] == []
    (tmp_path / "conf.d" / "a.ini").write_text("[watcher:a]\ncmd = /bin/true\n")
    config, warnings = load_config(str(main))
    assert [w.name for w in config.watchers] == ["a"]
    assert warnings == []
