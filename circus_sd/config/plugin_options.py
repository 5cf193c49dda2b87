"""Plugin options: a `[plugin:NAME]` section's strings parsed into a typed dataclass.

Each shipped plugin declares its options once, as a frozen dataclass of `option()` fields (the
same declarations as the watcher options): the loader checks a section against them (errors
with file and line, at start-up), the plugin process parses its options with them, and the
README's tables are generated from them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import TypeVar

from circus_sd.config.options import OptionValueError, decimal_integer, options_of
from circus_sd.sizes import human_bytes

T = TypeVar("T")


class PluginOptionError(OptionValueError):
    """A plugin option that does not fit; `key` names it (None: the section as a whole)."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


def parse_options(cls: type[T], raw: Mapping[str, str]) -> tuple[T, list[str]]:
    """(the options, the keys `cls` does not declare); PluginOptionError for a bad value."""
    known = options_of(cls)
    fields = {}
    unknown = []
    for key, text in raw.items():
        if key not in known:
            unknown.append(key)
            continue
        field, declared = known[key]
        try:
            fields[field] = declared.parse(text)
        except OptionValueError as error:
            raise PluginOptionError(key, str(error)) from None
    try:
        return cls(**fields), unknown
    except PluginOptionError:
        raise
    except OptionValueError as error:
        raise PluginOptionError(None, str(error)) from None


def required(value: str, key: str) -> None:
    """For `__post_init__`: a text option that has no default."""
    if not value.strip():
        raise PluginOptionError(key, "required")


# -- value parsers only plugins use ----------------------------------------------------------------


def optional_number(raw: str) -> float | None:
    value = raw.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise OptionValueError(f"expected a number, got {raw!r}") from None
    if number != number or number < 0:
        raise OptionValueError(f"expected a number >= 0, got {raw!r}")
    return number


def positive_number(raw: str) -> float:
    number = optional_number(raw)
    if number is None or number <= 0:
        raise OptionValueError(f"expected a number > 0, got {raw!r}")
    return number


def port_number(raw: str) -> int:
    value = raw.strip()
    port = decimal_integer(value)
    if port is not None and 0 < port < 65536:
        return port
    raise OptionValueError(f"expected a port number (1-65535), got {raw!r}")


def regex(raw: str) -> str:
    try:
        re.compile(raw)
    except re.error as error:
        raise OptionValueError(f"not a valid regular expression ({error}): {raw!r}") from None
    return raw


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise OptionValueError(f"expected one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


@dataclasses.dataclass(frozen=True)
class MemoryLimit:
    """Circus's `max_mem` / `min_mem`: a bare number is a percentage of RAM, `200M` a size."""

    value: float
    absolute: bool

    def over(self, rss: int, percent: float) -> bool:
        return (rss if self.absolute else percent) > self.value

    def under(self, rss: int, percent: float) -> bool:
        return (rss if self.absolute else percent) < self.value

    def __str__(self) -> str:
        return human_bytes(self.value) if self.absolute else f"{self.value:g}%"


_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kKMGTP]?)(?:i?B)?")
_SIZE_FACTORS = {"": 1, "k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
                 "P": 1 << 50}


def parse_size(text: str) -> int | None:
    """`512`, `200M`, `1.5G`, `3.2MiB` (powers of 1024) as bytes; None if not a size."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        return None
    return int(float(match.group(1)) * _SIZE_FACTORS[match.group(2)])


def memory_limit(raw: str) -> MemoryLimit | None:
    value = raw.strip()
    if not value:
        return None
    try:
        return MemoryLimit(float(value), absolute=False)
    except ValueError:
        pass
    size = parse_size(value)
    if size is None:
        raise OptionValueError(
            f"expected a percentage of RAM (e.g. 90) or a size (e.g. 200M, 1.5G), got {raw!r}"
        )
    return MemoryLimit(float(size), absolute=True)
