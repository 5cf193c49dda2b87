"""Circus's INI grammar and environment expansion, compared with Circus 0.19 itself (its reader
and `get_config`, run by the python of .build/bench-venv)."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from circus_sd.config import load_config
from circus_sd.config.ini import parse_ini
from circus_sd.config.process_env import ChildDefaults, child_environment, expand_variables

ROOT = Path(__file__).resolve().parents[2]
CIRCUS_VENV = Path(os.environ.get("CIRCUS_VENV", ROOT / ".build" / "bench-venv"))
CIRCUS_PYTHON = CIRCUS_VENV / "bin" / "python"
needs_circus = pytest.mark.skipif(
    not CIRCUS_PYTHON.exists(),
    reason=f"needs circus 0.19 in {CIRCUS_VENV} (make .build/bench-venv/.stamp)",
)

# Each read by both readers; what Circus keeps of each key is what circus-sd must keep.
SAMPLES = [
    "[a]\nk = v\n",
    "[a]\nk: v\nother=1\n",
    "[a]\nk = first\n  second\n\n  third\n\n",
    "[a]\n# comment\n; other comment\nk = v\n  # kept inside a value, as Circus does\n  more\n",
    "[a]\nk = v: with colon = and equals\n",
    "[a]\nk = v\n[b]\nx =\n",
    # (An indented first key is read without its blanks here; Circus keeps them in the key.)
    "[a]\nMixed_Case = Value\n",
    # Inline comments: ` ;` ends the value, `;` without a blank before it and `#` do not.
    "[a]\nk = 5 ; five\nj = a;b\nh = a #b\ni = /x;y ; z\n",
    # `""` is an empty value; other quotes stay.
    '[a]\nk = ""\nj = "x"\ni = \'y\'\n',
    # A key set again keeps its first value; a section named again adds to the first.
    "[a]\nk = 1\nk = 2\n[b]\nx = 1\n[a]\nk = 3\nj = 4\n",
    # `rem` lines are comments in Circus's reader.
    "[a]\nrem this is a comment\nk = v\n",
]


def _circus(script: str, *args: str, environ: dict[str, str] | None = None) -> Any:
    """What a script run by Circus's python (with `environ`, else ours) prints as JSON."""
    done = subprocess.run(
        [str(CIRCUS_PYTHON), "-c", textwrap.dedent(script), *args],
        capture_output=True, text=True, timeout=120, check=True, env=environ,
    )
    return json.loads(done.stdout)


def _ours(text: str) -> dict[str, dict[str, str]]:
    # The loader's merge (first section and first value win), on the raw keys.
    merged: dict[str, dict[str, str]] = {}
    for section in parse_ini(text):
        values = merged.setdefault(section.name, {})
        for entry in section.entries:
            values.setdefault(entry.key, entry.value)
    return merged


@needs_circus
def test_the_ini_reader_reads_as_circus_reads() -> None:
    circus = _circus(
        """
        import json, sys
        from circus.util import StrictConfigParser
        out = []
        for text in json.loads(sys.argv[1]):
            cfg = StrictConfigParser()
            cfg.read_string(text)
            out.append({s: {k: v for k, v in cfg.items(s) if k != "__name__"}
                        for s in cfg.sections()})
        print(json.dumps(out))
        """,
        json.dumps(SAMPLES),
    )
    assert [_ours(text) for text in SAMPLES] == circus


def test_inline_comments_and_quotes_as_written_by_hand() -> None:
    (section,) = parse_ini("[a]\nk = 5 ; five\nh = a #b\ne = \"\"\nc = x\n  ; kept\n")
    assert [(e.key, e.value, e.line) for e in section.entries] == [
        ("k", "5", 2), ("h", "a #b", 3), ("e", "", 4), ("c", "x\n; kept", 5),
    ]


def test_variables_expand_against_earlier_values_then_the_arbiter() -> None:
    known = {"PATH": "/bin", "HOME": "/home/u", "lower": "x"}
    assert expand_variables("$PATH:/opt/bin", known) == ("/bin:/opt/bin", [])
    assert expand_variables("${HOME}/a ${lower}", known) == ("/home/u/a x", [])
    # Circus's `$NAME` takes upper-case names only: `$lower` and a lone `$` stay.
    assert expand_variables("$lower $ 5$", known) == ("$lower $ 5$", [])
    assert expand_variables("a$NOPE_X-b", known) == ("a-b", ["NOPE_X"])
    assert expand_variables("$(circus.wid)", known) == ("$(circus.wid)", [])


@needs_circus
def test_includes_repeats_empty_sections_and_env_expansion_as_circus(tmp_path: Path) -> None:
    main = tmp_path / "circus.ini"
    main.write_text(textwrap.dedent("""
        [circus]
        include = one.ini two.ini

        [watcher:web]
        cmd = /bin/sleep 100 ; inline comment
        numprocesses = 2
        [watcher:web]
        numprocesses = 3
        priority = 4

        [watcher:empty]

        [env:web]
        PATH = $PATH:/opt/bin
        ABSENT = a$H16_NOT_SET_ANYWHERE-b
        KEPT = $(circus.env.H16_NOT_SET_ANYWHERE)
        HOME_DIR = $HOME/x
    """))
    (tmp_path / "one.ini").write_text(
        "[watcher:web]\nnumprocesses = 7\nstop_signal = INT\n[env:web]\nFROM = one\n"
    )
    (tmp_path / "two.ini").write_text(
        "[watcher:web]\nstop_signal = QUIT\nmax_retry = 9\n[env:web]\nFROM = two\n"
    )
    environ = {"PATH": "/usr/bin:/bin", "HOME": "/home/h16"}
    circus = _circus(
        """
        import json, sys
        from circus.config import get_config
        from circus.util import parse_env_dict
        config = get_config(sys.argv[1])
        print(json.dumps([
            {"name": w["name"], "cmd": w["cmd"], "numprocesses": w["numprocesses"],
             "priority": w["priority"], "stop_signal": int(w["stop_signal"]),
             "max_retry": w["max_retry"],
             "env": {k: v for k, v in parse_env_dict(w["env"]).items() if k != "__name__"}}
            for w in config["watchers"]
        ]))
        """,
        str(main),
        environ=environ,
    )
    config, _warnings = load_config(str(main), environ)
    ours: list[dict[str, Any]] = [
        {
            "name": w.name, "cmd": w.cmd, "numprocesses": w.numprocesses, "priority": w.priority,
            "stop_signal": w.stop_signal, "max_retry": w.max_retry,
            "env": child_environment(w, 1, ChildDefaults(environ, (0, 0), False)),
        }
        for w in config.watchers
    ]
    for watcher in ours:
        watcher["env"].pop("CIRCUS_WID")  # circus-sd's own
    assert ours == circus
    assert ours[0]["env"]["PATH"] == "/usr/bin:/bin:/opt/bin"
