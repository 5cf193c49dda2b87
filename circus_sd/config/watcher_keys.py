"""Watcher option keys: a raw key resolved to the WatcherConfig field it changes and its value
parsed, for the config file and `add`/`set` alike; and back, the keys a watcher shows."""

from __future__ import annotations

import dataclasses
from typing import Any

from circus_sd.access import Tier
from circus_sd.config.model import HOOK_NAMES, HookSpec, WatcherConfig
from circus_sd.config.options import (
    OptionValueError,
    field_tier,
    options_of,
    rlimit_setting,
)

OPTIONS = options_of(WatcherConfig)
STREAMS = ("stdout_stream", "stderr_stream")
# What a caller below the admin tier does not see in `options` and `get`: the environment holds
# secrets (database passwords, API tokens; a plugin's options travel there too).
SECRET_KEYS = frozenset({"env"})


@dataclasses.dataclass(frozen=True)
class WatcherKey:
    """A key, folded: its INI name, the WatcherConfig field it changes, and the part after the
    dot for streams and hooks."""

    name: str
    field: str
    sub: str = ""

    @property
    def tier(self) -> Tier:
        """Who may change it: decided on the field, whatever the key's spelling."""
        return field_tier(WatcherConfig, self.field)


def fold_key(raw: object) -> str:
    """A key as the config file reads it: case and surrounding blanks do not matter."""
    return str(raw).strip().lower()


def resolve_key(raw: object) -> WatcherKey | None:
    """The field `raw` changes, or None for a key that is no option of a watcher."""
    key = fold_key(raw)
    prefix, _, sub = key.partition(".")
    if key in OPTIONS:
        return WatcherKey(key, OPTIONS[key][0])
    if prefix in STREAMS and sub:
        return WatcherKey(key, prefix, sub)
    if key.startswith("rlimit_"):
        return WatcherKey(key, "rlimits")
    if prefix == "hooks" and sub:
        return WatcherKey(key, "hooks", sub)
    if key == "env":
        return WatcherKey(key, "env")
    return None


def parse_value(key: WatcherKey, text: str) -> Any:
    """The value of one key: a declared option's value, `(RLIMIT_*, soft, hard)` for a limit,
    a HookSpec (None: empty, no hook) for a hook. Streams and `env` are parsed as a whole.
    Raises OptionValueError."""
    if key.field == "rlimits":
        return rlimit_setting(key.name, text)
    if key.field == "hooks":
        if key.sub not in HOOK_NAMES:
            raise OptionValueError(f"not a hook; hooks are {', '.join(HOOK_NAMES)}")
        return HookSpec.parse(text) if text.strip() else None
    if key.name in OPTIONS:
        return OPTIONS[key.name][1].parse(text)
    raise ValueError(f"{key.name} is parsed with its whole {key.field}")  # a caller's mistake


def sent_as_text(key: str) -> bool:
    """Does circusctl send this option's value as the text typed (see Option.sent_as_text)?"""
    found = OPTIONS.get(fold_key(key))
    return found is not None and found[1].sent_as_text
