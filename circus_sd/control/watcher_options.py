"""Watcher options as the control protocol takes them (`set`, `add`), through the config file's
own path: config.watcher_keys, watcher_changes and watcher_checks.

A request's options are parsed once into `OptionChanges`: the access check reads the fields that
will change from it, and the very same object is what gets applied, so no spelling of a key can
be checked as one option and applied as another.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from circus_sd.access import Tier
from circus_sd.config.model import WatcherConfig
from circus_sd.config.option_view import option_values
from circus_sd.config.watcher_changes import (
    OptionChanges,
    WatcherOptionError,
    apply_changes,
    parse_changes,
)
from circus_sd.config.watcher_checks import WatcherContext, cross_check
from circus_sd.config.watcher_keys import (
    SECRET_KEYS,
    WatcherKey,
    fold_key,
    resolve_key,
)
from circus_sd.control.protocol import CommandError, Errno

# Re-exported: the handlers import them from here.
__all__ = [
    "SECRET_KEYS",
    "OptionChanges",
    "WatcherContext",
    "apply_options",
    "option_values",
    "parse_options",
]

log = logging.getLogger(__name__)


def _as_text(value: Any) -> str:
    """A JSON value as the config file would spell it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def parse_options(options: Mapping[str, Any], caller: Tier) -> OptionChanges:
    """Parse a request's options (Circus key -> JSON value) for a caller of tier `caller`.

    Keys are matched as the config file matches them (case and surrounding blanks do not
    matter), and the caller's tier is checked against the fields they resolve to before any value
    is looked at: the whole request is refused if one of them is above the caller."""
    resolved = [(_resolve(raw_key), value) for raw_key, value in options.items()]
    refused = sorted({key.field for key, _ in resolved if key.tier > caller})
    if refused:
        raise CommandError(
            f"access denied: only root or the arbiter's user may change {', '.join(refused)}",
            Errno.ACCESS_DENIED,
        )
    if any(key.field == "env_file" for key, _ in resolved):
        # Its files are read with the configuration file, relative to it, at each reload.
        raise CommandError("env_file: set it in the configuration file, then reloadconfig")
    try:
        return parse_changes(
            (key, value if key.field == "env" else _as_text(value)) for key, value in resolved
        )
    except WatcherOptionError as exc:
        raise CommandError(str(exc)) from None


def _resolve(raw_key: object) -> WatcherKey:
    key = resolve_key(raw_key)
    if key is None:
        raise CommandError(f"{fold_key(raw_key)}: not a known option")
    return key


def apply_options(
    config: WatcherConfig, changes: OptionChanges, context: WatcherContext | None = None
) -> WatcherConfig:
    """A copy of `config` with `changes` applied, cross-checked as the config file's loader
    checks a watcher (a new `uid` without a `gid` takes that user's primary group; the program
    is found on the processes' PATH; named sockets exist).

    `context`: the arbiter's sockets and config directory; without it, socket references are
    not checked and hooks are searched on the watcher's PYTHONPATH only."""
    context = context or WatcherContext.of_this_process()
    try:
        changed, notices = apply_changes(config, changes, context.config_dir)
        checked, more = cross_check(changed, context)
    except WatcherOptionError as exc:
        raise CommandError(str(exc)) from None
    for notice in [*notices, *more]:
        log.warning("%s: %s: %s", config.name, notice.key, notice.message)
    return checked
