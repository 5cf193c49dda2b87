"""`env_file` files: KEY=VALUE lines read as systemd 252 reads `EnvironmentFile=` files.

The syntax follows systemd's parser (src/basic/env-file.c), so a file written for a unit works
here unchanged:
- a line starting (after blanks) with `#` or `;` is a comment, to its end; blank lines are skipped;
  a `#` later in a line is part of the value;
- blanks around the key and before the value are dropped; an unquoted value loses its trailing
  blanks, and a backslash takes the next character literally (a backslash-newline joins lines);
- 'single quotes' keep everything literally, newlines included; in "double quotes" a backslash
  escapes only `"`, `\\`, `` ` `` and `$` (and a newline, which it removes), else it is kept;
  a value may go on after a closing quote (`A="x"'y'z` is `xyz`), but a quote inside an
  unquoted part is an ordinary character (`A=x'y'` is `x'y'`);
- nothing is expanded (`$VAR` stays as written); a key set again takes the later value.
systemd drops what it cannot use, with a log line at most; here a line without `=`, a name that
is no variable name (`export A=1` included: systemd has no `export`), an unterminated quote and
text that is not UTF-8 are errors naming the file and line, so that nothing is silently lost.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import stat

from circus_sd.config.options import OptionValueError

_BLANKS = " \t\r\n"
_NEWLINES = "\r\n"
_COMMENTS = "#;"
# What a backslash escapes inside double quotes, as in the shell.
_DOUBLE_QUOTE_ESCAPES = '"\\`$'
# systemd's env_name_is_valid: letters, digits and `_`, not starting with a digit.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Environment files are small; a bigger one is a path naming the wrong file.
MAX_SIZE = 1 << 20


class EnvFileValue(str):
    """A value read from an environment file: the process gets it as written, never expanded
    (`$`, `$(circus.…)`), as systemd's EnvironmentFile= gives it."""

    __slots__ = ()


class EnvFileError(ValueError):
    """A file that cannot be used; str() is `path:line: message` (or `path: message`)."""

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        super().__init__(f"{path}:{line}: {message}" if line is not None else f"{path}: {message}")
        self.path = path
        self.line = line
        self.message = message


@dataclasses.dataclass(frozen=True)
class EnvFileRef:
    """One path of an `env_file` option; `optional` (written `-PATH`): a missing file is no
    error, as with systemd's `EnvironmentFile=-PATH`."""

    path: str
    optional: bool = False

    @classmethod
    def parse(cls, word: str) -> EnvFileRef:
        optional = word.startswith("-")
        path = word[1:] if optional else word
        if not path:
            raise OptionValueError("expected a path after '-'")
        return cls(path, optional)

    def __str__(self) -> str:
        return f"-{self.path}" if self.optional else self.path


class _State(enum.Enum):
    PRE_KEY = enum.auto()
    KEY = enum.auto()
    PRE_VALUE = enum.auto()
    VALUE = enum.auto()
    VALUE_ESCAPE = enum.auto()
    SINGLE_QUOTED = enum.auto()
    DOUBLE_QUOTED = enum.auto()
    DOUBLE_QUOTED_ESCAPE = enum.auto()
    COMMENT = enum.auto()
    COMMENT_ESCAPE = enum.auto()


# States in which the end of the text ends an assignment (systemd keeps it).
_VALUE_STATES = frozenset({_State.PRE_VALUE, _State.VALUE, _State.VALUE_ESCAPE})


def parse_env_text(text: str, path: str) -> dict[str, str]:
    """The variables of an env file's text, in file order; raises EnvFileError."""
    found: dict[str, str] = {}
    state = _State.PRE_KEY
    key: list[str] = []
    value: list[str] = []
    line = 1  # the current character's line
    start = 1  # the line the current assignment started on, for errors
    quote_line = 1
    key_end = 0  # len(key) without trailing blanks
    value_end = 0  # len(value) without trailing unquoted blanks

    def push() -> None:
        name = "".join(key[:key_end])
        if not _NAME.match(name):
            hint = " (no `export`: systemd reads KEY=VALUE lines)" if name.startswith(
                "export ") else ""
            # The text itself is never quoted in errors: the file may be one the log must not
            # show (a key, another service's secrets) if a path names the wrong file.
            raise EnvFileError(
                path, f"not a variable name (letters, digits and _, not a digit first){hint}",
                start,
            )
        found[name] = EnvFileValue("".join(value[:value_end]))

    for char in text:
        if state is _State.PRE_KEY:
            if char in _COMMENTS:
                state = _State.COMMENT
            elif char not in _BLANKS:
                state, key, value, start = _State.KEY, [char], [], line
                key_end = 1
        elif state is _State.KEY:
            if char in _NEWLINES:
                raise EnvFileError(path, "no `=`: expected KEY=VALUE", start)
            if char == "=":
                state, value_end = _State.PRE_VALUE, 0
            else:
                key.append(char)
                if char not in _BLANKS:
                    key_end = len(key)
        elif state is _State.PRE_VALUE:
            if char in _NEWLINES:
                push()
                state = _State.PRE_KEY
            elif char == "'":
                state, quote_line = _State.SINGLE_QUOTED, line
            elif char == '"':
                state, quote_line = _State.DOUBLE_QUOTED, line
            elif char == "\\":
                state, value_end = _State.VALUE_ESCAPE, len(value)
            elif char not in _BLANKS:
                value.append(char)
                state, value_end = _State.VALUE, len(value)
        elif state is _State.VALUE:
            if char in _NEWLINES:
                push()
                state = _State.PRE_KEY
            elif char == "\\":
                # Blanks before an escape are kept, even at the end.
                state, value_end = _State.VALUE_ESCAPE, len(value)
            else:
                value.append(char)
                if char not in _BLANKS:
                    value_end = len(value)
        elif state is _State.VALUE_ESCAPE:
            state = _State.VALUE
            if char not in _NEWLINES:  # an escaped newline joins the lines
                value.append(char)
            value_end = len(value)
        elif state is _State.SINGLE_QUOTED:
            if char == "'":
                state = _State.PRE_VALUE
            else:
                value.append(char)
            value_end = len(value)
        elif state is _State.DOUBLE_QUOTED:
            if char == '"':
                state = _State.PRE_VALUE
            elif char == "\\":
                state = _State.DOUBLE_QUOTED_ESCAPE
            else:
                value.append(char)
            value_end = len(value)
        elif state is _State.DOUBLE_QUOTED_ESCAPE:
            state = _State.DOUBLE_QUOTED
            if char in _DOUBLE_QUOTE_ESCAPES:
                value.append(char)
            elif char != "\n":
                value += ["\\", char]
            value_end = len(value)
        elif state is _State.COMMENT:
            if char == "\\":
                state = _State.COMMENT_ESCAPE  # as systemd: a backslash-newline goes on commenting
            elif char in _NEWLINES:
                state = _State.PRE_KEY
        elif state is _State.COMMENT_ESCAPE:
            state = _State.COMMENT
        if char == "\n":
            line += 1

    if state in (_State.SINGLE_QUOTED, _State.DOUBLE_QUOTED, _State.DOUBLE_QUOTED_ESCAPE):
        raise EnvFileError(path, "a quote opened here is never closed", quote_line)
    if state is _State.KEY:
        raise EnvFileError(path, "no `=`: expected KEY=VALUE", start)
    if state in _VALUE_STATES:
        push()
    return found


def read_env_file(ref: EnvFileRef, base_dir: str | None = None) -> dict[str, str]:
    """The variables of the file `ref` names (a relative path is taken from `base_dir`); an
    optional file that does not exist gives none. Raises EnvFileError."""
    path = os.path.join(base_dir, ref.path) if base_dir else ref.path
    try:
        # Not blocking: a FIFO (or a device) named by mistake must not hang the arbiter's load.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if ref.optional:
            return {}
        raise EnvFileError(
            path, "no such file (write `-PATH` for a file that may be missing)"
        ) from None
    except OSError as exc:
        raise EnvFileError(path, f"cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise EnvFileError(path, "not a regular file")
        if info.st_size > MAX_SIZE:
            raise EnvFileError(path, f"larger than {MAX_SIZE // 1024} KiB")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(MAX_SIZE + 1)
    except OSError as exc:
        raise EnvFileError(path, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SIZE:
        raise EnvFileError(path, f"larger than {MAX_SIZE // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise EnvFileError(path, "not valid UTF-8 text", line) from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise EnvFileError(path, "a NUL byte in the text (a binary file?)", line)
    return parse_env_text(text, path)


def env_file_paths(raw: str) -> tuple[str, ...]:
    """The `env_file` option: paths separated by blanks, each `PATH` or `-PATH`."""
    words = tuple(raw.split())
    for word in words:
        if word == "-":
            raise OptionValueError("expected a path after '-'")
    return words
