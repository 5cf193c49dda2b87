"""circus-sd.ini(5): generated from the declarations, it lists every option and renders cleanly."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from circus_sd.config.manpage import manpage, roff_text
from circus_sd.config.model import ArbiterConfig, SocketConfig, WatcherConfig
from circus_sd.config.options import options_of
from circus_sd.config.streams import StreamConfig

PAGE = manpage()


def entries(section_title: str) -> dict[str, str]:
    """`.TP` entries of one `.SH` section: key -> its text up to the next entry."""
    body = PAGE.split(f'.SH "{section_title}"\n', 1)[1].split("\n.SH ", 1)[0]
    found: dict[str, str] = {}
    for chunk in body.split(".TP\n")[1:]:
        head, _, text = chunk.partition("\n")
        assert head.startswith(".B "), chunk
        found[head[3:].replace("\\-", "-")] = text
    return found


@pytest.mark.parametrize(
    ("cls", "section"),
    [
        (ArbiterConfig, "[circus] SECTION"),
        (WatcherConfig, "[watcher:NAME] SECTIONS"),
        (StreamConfig, "OUTPUT STREAMS"),
        (SocketConfig, "[socket:NAME] SECTIONS"),
    ],
)
def test_every_declared_option_has_an_entry_with_its_default(cls: type, section: str) -> None:
    listed = entries(section)
    declared = options_of(cls)
    assert set(declared) <= set(listed), set(declared) - set(listed)
    for key in declared:
        assert "Default: " in listed[key], key


def test_watcher_entries_say_whether_they_apply_live_and_who_may_set_them() -> None:
    listed = entries("[watcher:NAME] SECTIONS")
    joined = {key: " ".join(text.split()) for key, text in listed.items()}
    assert "Applies live" in joined["numprocesses"]
    assert "endpoint_group members" in joined["numprocesses"]
    assert "A change restarts the watcher's processes" in joined["cmd"]
    assert "root and the arbiter's user only" in joined["cmd"]
    assert "Default: none." in joined["env_file"]
    assert {"rlimit_NAME", "hooks.NAME"} <= set(listed)


def test_environment_files_are_described() -> None:
    assert '.SH "ENVIRONMENT FILES"' in PAGE
    assert ".B EnvironmentFile=" in PAGE


def test_roff_escapes_what_roff_would_misread() -> None:
    assert roff_text("`a-b` \\ x") == "\\fBa\\-b\\fR \\e x"
    assert roff_text(".starts with a dot") == "\\&.starts with a dot"
    assert roff_text("— …") == "\\[u2014] \\[u2026]"
    assert roff_text("see [Hooks](#hooks)") == "see Hooks"
    assert PAGE.isascii()


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed (make test has it)")
def test_groff_renders_the_page_without_a_warning(tmp_path: Path) -> None:
    page = tmp_path / "circus-sd.ini.5"
    page.write_text(PAGE)
    result = subprocess.run(
        ["groff", "-man", "-ww", "-Tutf8", str(page)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    text = re.sub(r".\x08", "", result.stdout)  # overstrike bold
    assert "circus-sd.ini - configuration file" in text
    assert "env_file" in text


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db not installed (make test has it)")
def test_man_reads_the_page_without_a_warning(tmp_path: Path) -> None:
    page = tmp_path / "circus-sd.ini.5"
    page.write_text(PAGE)
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8", "MAN_KEEP_FORMATTING": "0"}
    result = subprocess.run(
        ["man", "--warnings", "-l", str(page)],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert "[watcher:NAME] SECTIONS" in re.sub(r".\x08", "", result.stdout)
