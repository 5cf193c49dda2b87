"""What `--check` says of values every spawn would trip on: placeholders that the processes'
environment cannot fill (named, then passed as written, as Circus does), and resource limits that
setrlimit(2) cannot apply (refused)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from circus_sd.config import ConfigError, load_config
from circus_sd.config.process_env import substitute

ENV = {"PATH": "/usr/bin:/bin", "HOME": "/home/test"}


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "circus.ini"
    path.write_text(textwrap.dedent(text).removeprefix("\n"))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), ENV)
    return str(caught.value)


def _warnings(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "circus.ini"
    path.write_text(textwrap.dedent(text).removeprefix("\n"))
    _config, warnings = load_config(str(path), ENV)
    return [str(w) for w in warnings]


@pytest.mark.parametrize("key", ["cmd", "args"])
def test_a_variable_the_processes_will_not_have_is_named_with_file_and_line(
    tmp_path: Path, key: str
) -> None:
    lines = {"cmd": "/bin/echo", key: "/bin/echo --token $(circus.env.API_TOKEN)"}
    warnings = _warnings(tmp_path, "[watcher:web]\n" + "".join(
        f"{k} = {v}\n" for k, v in lines.items()
    ))
    line = list(lines).index(key) + 2
    expected = (
        f"{tmp_path}/circus.ini:{line}: [watcher:web] {key}: $(circus.env.API_TOKEN) names no "
        "variable"
    )
    assert any(w.startswith(expected) for w in warnings), warnings


def test_the_spawn_passes_an_unset_variable_as_written_as_circus_does() -> None:
    assert substitute("x $(circus.env.NOPE) $(circus.wid) $(circus.env.home)", 3,
                      {"HOME": "/h"}) == "x $(circus.env.NOPE) 3 /h"
    assert substitute("$(circus.nonsense)", 1, {}) == "$(circus.nonsense)"


def test_variables_from_env_sections_or_a_copied_environment_are_fine(tmp_path: Path) -> None:
    warnings = _warnings(tmp_path, """
        [watcher:web]
        cmd = /bin/echo $(circus.env.API_TOKEN) $(circus.wid)

        [env:web]
        API_TOKEN = x

        [watcher:home]
        cmd = /bin/echo $(circus.env.home)
        copy_env = true
        """)
    assert warnings == []


def test_an_unknown_placeholder_is_named(tmp_path: Path) -> None:
    warnings = _warnings(tmp_path, """
        [watcher:web]
        cmd = /bin/echo $(circus.nonsense)
        """)
    assert any("[watcher:web] cmd: $(circus.nonsense) names no variable" in w for w in warnings)


@pytest.mark.parametrize("value", ["-1", "infinity", "unlimited", "64:infinity", "99999999999"])
def test_open_files_cannot_be_unlimited(tmp_path: Path, value: str) -> None:
    message = _error(tmp_path, f"""
        [watcher:web]
        cmd = /bin/true
        rlimit_nofile = {value}
        """)
    assert ":3: [watcher:web] rlimit_nofile: open files cannot be unlimited" in message
