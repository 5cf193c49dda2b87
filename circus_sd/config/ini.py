"""A line-tracking INI reader with the syntax of Circus 0.19's reader (its StrictConfigParser),
so that a Circus file reads the same here and errors can name `file:line`."""

from __future__ import annotations

import dataclasses


class IniSyntaxError(ValueError):
    """A line that is not a section header, a `key = value`, a comment or a continuation."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclasses.dataclass(frozen=True)
class IniEntry:
    """One `key = value` (continuation lines joined with newlines); `key` as written."""

    key: str
    value: str
    line: int


@dataclasses.dataclass(frozen=True)
class IniSection:
    """One `[name]` header and the entries under it, in file order, duplicates included."""

    name: str
    line: int
    entries: tuple[IniEntry, ...]


_COMMENT_PREFIXES = ("#", ";")


class _Builder:
    """Accumulates sections while the lines are read; kept apart so `parse_ini` reads simply."""

    def __init__(self) -> None:
        self.sections: list[IniSection] = []
        self._name: str | None = None
        self._line = 0
        self._entries: list[IniEntry] = []
        # The entry being read: its key, first line, indentation and value lines.
        self._key: str | None = None
        self._key_line = 0
        self._key_indent = 0
        self._value: list[str] = []

    @property
    def in_section(self) -> bool:
        return self._name is not None

    def continues_value(self, indent: int) -> bool:
        # configparser: a line indented deeper than its key line continues the value.
        return self._key is not None and indent > self._key_indent

    def add_value_line(self, text: str) -> None:
        if self._key is not None:
            self._value.append(text)

    def start_section(self, name: str, line: int) -> None:
        self.finish_section()
        self._name, self._line = name, line

    def start_entry(self, key: str, value: str, line: int, indent: int) -> None:
        self._finish_entry()
        self._key, self._key_line, self._key_indent = key, line, indent
        self._value = [value]

    def _finish_entry(self) -> None:
        if self._key is not None:
            value = "\n".join(self._value)
            self._entries.append(IniEntry(self._key, value, self._key_line))
        self._key = None
        self._value = []

    def finish_section(self) -> None:
        self._finish_entry()
        if self._name is not None:
            self.sections.append(IniSection(self._name, self._line, tuple(self._entries)))
        self._name = None
        self._entries = []


def _section_name(stripped: str, line: int) -> str:
    end = stripped.find("]")
    if end < 0:
        raise IniSyntaxError(line, f"section header without ']': {stripped!r}")
    rest = stripped[end + 1 :].strip()
    if rest and not rest.startswith(_COMMENT_PREFIXES):
        raise IniSyntaxError(line, f"unexpected text after the section header: {rest!r}")
    name = stripped[1:end].strip()
    if not name:
        raise IniSyntaxError(line, "empty section name '[]'")
    return name


def _split_entry(stripped: str, line: int) -> tuple[str, str]:
    # The first '=' or ':' separates key and value (configparser's non-greedy OPTCRE).
    positions = [p for p in (stripped.find("="), stripped.find(":")) if p >= 0]
    if not positions:
        raise IniSyntaxError(
            line, f"expected 'key = value', a [section] or a comment, got {stripped!r}"
        )
    cut = min(positions)
    key = stripped[:cut].strip()
    if not key:
        raise IniSyntaxError(line, f"missing key before {stripped[cut]!r}")
    return key, _value_of(stripped[cut + 1 :].strip())


def _value_of(text: str) -> str:
    """What Circus keeps of the text after `=`: up to its first `;` if a blank precedes it (an
    inline comment; only that first `;` counts, and `#` never starts one), and `""` as empty."""
    cut = text.find(";")
    if cut > 0 and text[cut - 1].isspace():
        text = text[:cut].strip()
    return "" if text == '""' else text


def _is_comment(raw: str) -> bool:
    # Circus's reader: `#`/`;` in the first column, or a `rem` line (an old Windows INI habit).
    first = raw[:1]
    return first in ("#", ";") or (first in ("r", "R") and raw.split(None, 1)[0].lower() == "rem")


def parse_ini(text: str) -> list[IniSection]:
    """Sections of `text` in file order. As in Circus: blank lines and comment lines in the
    first column are dropped; a line indented deeper than its key continues the value, even one
    starting with `#` or `;`; ` ;` starts an inline comment."""
    builder = _Builder()
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip()
        if not stripped or _is_comment(raw):
            continue
        indent = len(raw) - len(raw.lstrip())
        if builder.continues_value(indent):
            builder.add_value_line(stripped)
        elif stripped.startswith(_COMMENT_PREFIXES):
            continue  # an indented comment outside a value
        elif stripped.startswith("["):
            builder.start_section(_section_name(stripped, number), number)
        elif not builder.in_section:
            raise IniSyntaxError(number, f"{stripped!r} comes before any [section] header")
        else:
            key, value = _split_entry(stripped, number)
            builder.start_entry(key, value, number, indent)
    builder.finish_section()
    return builder.sections
