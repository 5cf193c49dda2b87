"""Circus's `$(circus.…)` placeholders as the config file reads them (and `((circus.…))`)."""

from __future__ import annotations

import re
from collections.abc import Mapping

# `$(circus.x.y)` and its older spelling `((circus.x.y))`, case-insensitive as in Circus.
PLACEHOLDER = re.compile(r"\$\(circus\.([\w.-]+)\)|\(\(circus\.([\w.-]+)\)\)", re.IGNORECASE)


def has_placeholder(text: str) -> bool:
    return PLACEHOLDER.search(text) is not None


def placeholder_name(match: re.Match[str]) -> str:
    """`x.y` of a PLACEHOLDER match, whichever spelling it used."""
    return match.group(1) or match.group(2)


def lookup(name: str, env: Mapping[str, str]) -> str | None:
    """Circus compares variable names case-insensitively; prefer an exact, then upper-case hit."""
    for candidate in (name, name.upper()):
        if candidate in env:
            return env[candidate]
    folded = name.casefold()
    for key in sorted(env):
        if key.casefold() == folded:
            return env[key]
    return None


def substitute_env(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """`text` with `$(circus.env.X)` replaced (other `$(circus.…)` placeholders are the spawn
    path's), and the placeholders naming a variable `env` lacks: kept as written, as Circus
    keeps them."""
    unset: list[str] = []

    def replace(match: re.Match[str]) -> str:
        prefix, _, variable = placeholder_name(match).partition(".")
        if prefix.lower() != "env" or not variable:
            return match.group(0)
        found = lookup(variable, env)
        if found is None:
            unset.append(match.group(0))
            return match.group(0)
        return found

    return PLACEHOLDER.sub(replace, text), unset
