"""The README documents every option, from the same declarations the parser uses."""

from __future__ import annotations

import pathlib

from circus_sd.config.doc import replace_tables

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_option_tables_match_the_declarations() -> None:
    text = README.read_text()
    assert replace_tables(text) == text, "README option tables are stale: run `make docs`"
