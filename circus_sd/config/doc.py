"""The README's option tables, generated from the option declarations (`python -m ...doc`)."""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import signal
import sys
from collections.abc import Callable
from typing import Any

from circus_sd.access import Tier
from circus_sd.config.model import ArbiterConfig, SocketConfig, WatcherConfig
from circus_sd.config.options import option_of
from circus_sd.config.streams import StreamConfig


def default_text(name: str, value: Any) -> str:
    """An option's default as the docs show it."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if name == "stop_signal":
        return signal.Signals(value).name
    if isinstance(value, enum.Enum):
        return value.name
    if value == ():
        return "—"
    return str(value)


DefaultText = Callable[[str, Any], str]


@dataclasses.dataclass(frozen=True)
class OptionRow:
    """One declared option as the docs present it (README tables, circus-sd.ini(5))."""

    key: str
    default: str
    doc: str
    live: bool
    tier: Tier


def option_rows(cls: type, default_text: DefaultText = default_text) -> list[OptionRow]:
    """The declared options of a config dataclass, in declaration order."""
    rows = []
    for field in dataclasses.fields(cls):
        declared = option_of(field)
        if declared is not None:
            rows.append(OptionRow(
                declared.key, default_text(field.name, field.default), declared.doc,
                declared.live, declared.tier,
            ))
    return rows


def option_table(
    cls: type, default_text: DefaultText = default_text, settable: bool = False
) -> str:
    """A Markdown table of a config dataclass's options: key, default, doc (and *live*; with
    `settable`, *group* for those endpoint_group members may change with `set`)."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for row in option_rows(cls, default_text):
        live = " *(live)*" if row.live else ""
        group = " *(group)*" if settable and row.tier <= Tier.OPERATE else ""
        rows.append(f"| `{row.key}` | {row.default} | {row.doc}{live}{group} |")
    return "\n".join(rows)


def tables() -> str:
    return (
        "#### `[circus]`\n\n" + option_table(ArbiterConfig) + "\n\n"
        "#### `[watcher:NAME]`\n\n" + option_table(WatcherConfig, settable=True) + "\n\n"
        "#### `stdout_stream.*` / `stderr_stream.*` (in `[watcher:NAME]`)\n\n"
        + option_table(StreamConfig)
        + "\n\n"
        "#### `[socket:NAME]`\n\n" + option_table(SocketConfig) + "\n"
    )


BEGIN = "<!-- options:begin"
END = "<!-- options:end -->"


def replace_section(text: str, begin: str, end: str, content: str) -> str:
    """`text` with `content` between the line holding `begin` and the `end` marker."""
    start = text.index("\n", text.index(begin)) + 1
    return text[:start] + content + text[text.index(end) :]


def replace_tables(text: str) -> str:
    """`text` (the README) with the generated tables between its option markers."""
    return replace_section(text, BEGIN, END, tables())


def run(argv: list[str], generate: Callable[[], str], replace: Callable[[str], str]) -> None:
    """`--write FILE` updates the file in place; no argument prints the tables."""
    if argv[:1] == ["--write"]:
        path = pathlib.Path(argv[1])
        path.write_text(replace(path.read_text()))
    else:
        print(generate(), end="")


if __name__ == "__main__":
    run(sys.argv[1:], tables, replace_tables)
