"""`env_file`: systemd's EnvironmentFile= syntax, and how the loader merges the files."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from types import MappingProxyType

import pytest

from circus_sd.config.env_file import (
    MAX_SIZE,
    EnvFileError,
    EnvFileRef,
    parse_env_text,
    read_env_file,
)
from circus_sd.config.loader import ConfigError, load_config
from circus_sd.config.model import WatcherConfig
from circus_sd.config.process_env import ChildDefaults, child_environment


def parse(text: str) -> dict[str, str]:
    return parse_env_text(text, "/etc/default/web")


# -- the syntax, case by case (each as systemd 252's env-file.c reads it) -----------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB=2\n", {"A": "1", "B": "2"}),
        ("A=1", {"A": "1"}),  # no final newline
        ("  A  =   spaced value  \n", {"A": "spaced value"}),
        ("A=\n", {"A": ""}),
        ("A=", {"A": ""}),
        ("# a comment\n; another\n\n   # indented\nA=1\n", {"A": "1"}),
        ("A=x # not a comment\n", {"A": "x # not a comment"}),
        ("A='single $HOME \\n'\n", {"A": "single $HOME \\n"}),
        ("A='two\nlines'\n", {"A": "two\nlines"}),
        ('A="a \\"b\\" \\$c \\\\ \\` \\n"\n', {"A": 'a "b" $c \\ ` \\n'}),
        ('A="joined \\\nline"\n', {"A": "joined line"}),
        ("A=un\\quoted\\ \n", {"A": "unquoted "}),  # escaped blank kept, unescaped dropped
        ("A=one\\\ntwo\n", {"A": "onetwo"}),
        ("A=\"x\"'y'z\n", {"A": "xyz"}),  # quoted parts and what follows them are joined
        ("A=x'y'\n", {"A": "x'y'"}),  # a quote inside an unquoted part is a character
        ('A="  kept  "   \n', {"A": "  kept  "}),
        ("A=$OTHER ${X}\n", {"A": "$OTHER ${X}"}),  # never expanded
        ("A=1\nA=2\n", {"A": "2"}),  # the later one
        ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
        ("# comment \\\nA=1\nB=2\n", {"B": "2"}),  # systemd: a backslash continues a comment
        ("_a9=ok\n", {"_a9": "ok"}),
        ("A=é\n", {"A": "é"}),
    ],
)
def test_systemd_syntax(text: str, expected: dict[str, str]) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("A=1\nexport B=2\n", 2, "not a variable name (letters, digits and _, not a digit "
         "first) (no `export`"),
        ("A=1\n\n9X=2\n", 3, "not a variable name"),
        ("A-B=2\n", 1, "not a variable name"),
        ("A=1\nJUSTAWORD\nC=3\n", 2, "no `=`: expected KEY=VALUE"),
        ("A=1\nB='never\nclosed\n", 2, "a quote opened here is never closed"),
        ('A="open', 1, "a quote opened here is never closed"),
        ("A='x'\nLAST", 2, "no `=`: expected KEY=VALUE"),
    ],
)
def test_what_systemd_would_drop_is_an_error_naming_file_and_line(
    text: str, line: int, message: str
) -> None:
    with pytest.raises(EnvFileError) as caught:
        parse(text)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"/etc/default/web:{line}: {message}")


def test_a_missing_file_is_an_error_unless_its_path_starts_with_a_dash(tmp_path: Path) -> None:
    assert read_env_file(EnvFileRef.parse("-missing.env"), str(tmp_path)) == {}
    with pytest.raises(EnvFileError, match=r"missing\.env: no such file"):
        read_env_file(EnvFileRef.parse("missing.env"), str(tmp_path))


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "bad.env").write_bytes(b"A=1\nB=\xff\n")
    with pytest.raises(EnvFileError, match=r"bad\.env:2: not valid UTF-8"):
        read_env_file(EnvFileRef("bad.env"), str(tmp_path))


# -- in the configuration file ------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_files_stack_over_env_sections_later_over_earlier(tmp_path: Path) -> None:
    write(tmp_path, "common.env", "SHARED=common\nLEVEL=common\nFROM_COMMON=1\n")
    write(tmp_path, "web.env", "LEVEL=web-file\n")
    write(tmp_path, "override.env", "LEVEL=override\n")
    config_path = write(tmp_path, "circus.ini", f"""
        [env]
        LEVEL = env
        ONLY_ENV = 1
        env_file = {tmp_path}/common.env

        [env:web]
        LEVEL = env-web

        [watcher:web]
        cmd = sleep 60
        env_file = web.env override.env -absent.env
        """)
    config, warnings = load_config(str(config_path), environ={})
    (web,) = config.watchers
    assert dict(web.env) == {
        "LEVEL": "override",  # the watcher's files last, the later file over the earlier
        "ONLY_ENV": "1",
        "SHARED": "common",
        "FROM_COMMON": "1",
    }
    assert web.env_file == ("web.env", "override.env", "-absent.env")
    assert "env_file" not in web.env
    assert warnings == []


def test_a_file_in_an_env_section_is_read_over_the_sections_own_keys(tmp_path: Path) -> None:
    write(tmp_path, "db.env", "PORT=5432\n")
    config_path = write(tmp_path, "circus.ini", """
        [env:db,web]
        env_file = db.env
        PORT = 1

        [watcher:db]
        cmd = sleep 60

        [watcher:web]
        cmd = sleep 60
        """)
    config, _warnings = load_config(str(config_path), environ={})
    assert [dict(w.env) for w in config.watchers] == [{"PORT": "5432"}] * 2


@pytest.mark.parametrize(
    ("section", "file_text", "message"),
    [
        ("watcher:web", None, r"circus\.ini:3: \[watcher:web\] env_file: \S+/web\.env: no such"),
        ("env:web", None, r"circus\.ini:3: \[env:web\] env_file: \S+/web\.env: no such file"),
        ("watcher:web", "OK=1\nexport A=1\n",
         r"circus\.ini:3: \[watcher:web\] env_file: \S+/web\.env:2: not a variable name"),
    ],
)
def test_a_bad_file_stops_the_load_naming_both_files_and_lines(
    tmp_path: Path, section: str, file_text: str | None, message: str
) -> None:
    if file_text is not None:
        write(tmp_path, "web.env", file_text)
    lines = [f"[{section}]", "X = 1", "env_file = web.env"]
    if section != "watcher:web":
        lines.append("[watcher:web]")
    config_path = write(tmp_path, "circus.ini", "\n".join([*lines, "cmd = sleep 60", ""]))
    with pytest.raises(ConfigError, match=message):
        load_config(str(config_path), environ={})


def test_the_text_of_a_wrong_file_never_appears_in_the_error(tmp_path: Path) -> None:
    """A path naming the wrong file (a key, a password file) must not put it in the log."""
    secret = tmp_path / "passwords"
    secret.write_text("root:$6$s3cretHash$abc:19000:0:99999:7:::\nKEY=dGhpcyBpcyBzZWNyZXQ=\n")
    with pytest.raises(EnvFileError) as caught:
        read_env_file(EnvFileRef.parse(str(secret)))
    said = str(caught.value).removeprefix(str(secret))
    assert said == ":1: no `=`: expected KEY=VALUE", said


def test_a_fifo_or_a_huge_file_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(EnvFileError, match="not a regular file"):
        read_env_file(EnvFileRef.parse(str(fifo)))
    huge = tmp_path / "huge.env"
    huge.write_text("A=" + "x" * (MAX_SIZE + 1) + "\n")
    with pytest.raises(EnvFileError, match="larger than"):
        read_env_file(EnvFileRef.parse(str(huge)))


def test_values_from_a_file_reach_the_process_as_written() -> None:
    """systemd expands nothing in EnvironmentFile=: `$HOME`, `${X}` and `$(circus.wid)` stay."""
    values = parse("PW=a$HOME${USER}$(circus.wid)\n")
    config = WatcherConfig(name="web", cmd="/bin/true", env=MappingProxyType(values))
    defaults = ChildDefaults(environ={"HOME": "/root", "USER": "root"}, nofile=(1024, 1024),
                             is_root=True)
    assert child_environment(config, 1, defaults)["PW"] == "a$HOME${USER}$(circus.wid)"
