"""The README documents every shipped plugin's options, from the declarations the plugins use."""

from __future__ import annotations

import pathlib

from circus_sd.config.plugin_catalog import SHIPPED, load_class
from circus_sd.plugins.doc import PLUGINS, replace_tables

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_plugin_option_tables_match_the_declarations() -> None:
    text = README.read_text()
    assert replace_tables(text) == text, "README plugin tables are stale: run `make docs`"


def test_every_shipped_plugin_has_a_table() -> None:
    documented = {cls for _heading, cls in PLUGINS}
    for path in SHIPPED.values():
        assert getattr(load_class(path), "options_class", None) in documented, path
