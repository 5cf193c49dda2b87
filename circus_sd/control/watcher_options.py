"""Watcher options as the control protocol shows and takes them (`options`, `get`, `set`, `add`).

A request's options are parsed once into `OptionChanges`: the access check reads the fields that
will change from it, and the very same object is what gets applied, so no spelling of a key can
be checked as one option and applied as another.
"""

from __future__ import annotations

import dataclasses
import os
import resource
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from circus_sd.access import Tier
from circus_sd.config.model import HOOK_NAMES, HookImportError, HookSpec, WatcherConfig
from circus_sd.config.options import (
    RLIMITS,
    OptionValueError,
    field_tier,
    options_of,
    primary_group,
    rlimit_setting,
)
from circus_sd.config.streams import StreamOptionError, parse_stream, stream_options
from circus_sd.control.protocol import CommandError, Errno

_OPTIONS = options_of(WatcherConfig)
_RLIMIT_NAMES = {number: key for key, number in RLIMITS.items()}
_STREAMS = ("stdout_stream", "stderr_stream")
# What a caller below the admin tier does not see in `options` and `get`: the environment holds
# secrets (database passwords, API tokens; a plugin's options travel there too).
SECRET_KEYS = frozenset({"env"})


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def _raw(value: Any) -> str:
    return "" if value is None else _as_text(value)


@dataclasses.dataclass(frozen=True)
class OptionChanges:
    """The options of one request, parsed: new field values, and what is merged at apply time."""

    # field name -> parsed value, for options declared with an Option.
    fields: Mapping[str, Any]
    # RLIMIT_* number -> (soft, hard).
    rlimits: Mapping[int, tuple[int, int]]
    # "stdout_stream"/"stderr_stream" -> sub-key -> raw text (merged with the current stream).
    streams: Mapping[str, Mapping[str, str]]
    # hook name -> spec, or None to remove it.
    hooks: Mapping[str, HookSpec | None]
    env: Mapping[str, str] | None


def parse_options(options: Mapping[str, Any], caller: Tier) -> OptionChanges:
    """Parse a request's options (Circus key -> JSON value) for a caller of tier `caller`.

    Keys are matched as the config file matches them (case and surrounding blanks do not
    matter), and the caller's tier is checked against the fields they resolve to before any value
    is looked at: the whole request is refused if one of them is above the caller."""
    resolved = [(_resolve(raw_key), value) for raw_key, value in options.items()]
    refused = sorted(
        {key.field for key, _ in resolved if field_tier(WatcherConfig, key.field) > caller}
    )
    if refused:
        raise CommandError(
            f"access denied: only root or the arbiter's user may change {', '.join(refused)}",
            Errno.ACCESS_DENIED,
        )
    fields: dict[str, Any] = {}
    rlimits: dict[int, tuple[int, int]] = {}
    streams: dict[str, dict[str, str]] = {}
    hooks: dict[str, HookSpec | None] = {}
    env: dict[str, str] | None = None
    for key, value in resolved:
        if key.field in _STREAMS:
            streams.setdefault(key.field, {})[key.sub] = _raw(value)
        elif key.field == "rlimits":
            try:
                number, soft, hard = rlimit_setting(key.name, _raw(value))
            except OptionValueError as exc:
                raise CommandError(f"{key.name}: {exc}") from None
            rlimits[number] = (soft, hard)
        elif key.field == "hooks":
            hooks[key.sub] = _hook_spec(key.sub, value)
        elif key.field == "env":
            if not isinstance(value, dict):
                raise CommandError("env: expected an object of NAME: value")
            env = {str(k): str(v) for k, v in value.items()}
        else:
            try:
                fields[key.field] = _OPTIONS[key.name][1].parse(_raw(value))
            except OptionValueError as exc:
                raise CommandError(f"{key.name}: {exc}") from None
    return OptionChanges(fields, rlimits, streams, hooks, env)


@dataclasses.dataclass(frozen=True)
class _Key:
    """A request's key, normalised: its INI name, the WatcherConfig field it changes, and the
    part after the dot for streams and hooks."""

    name: str
    field: str
    sub: str = ""


def _resolve(raw_key: object) -> _Key:
    key = str(raw_key).strip().lower()
    prefix, _, sub = key.partition(".")
    if prefix in _STREAMS and sub:
        return _Key(key, prefix, sub)
    if key in _OPTIONS:
        return _Key(key, _OPTIONS[key][0])
    if key in RLIMITS:
        return _Key(key, "rlimits")
    if prefix == "hooks" and sub:
        return _Key(key, "hooks", sub)
    if key == "env":
        return _Key(key, "env")
    raise CommandError(f"{key}: not a known option")


def apply_options(config: WatcherConfig, changes: OptionChanges) -> WatcherConfig:
    """A copy of `config` with `changes` applied, cross-checked as the config file's loader
    checks a watcher (a new `uid` without a `gid` takes that user's primary group)."""
    updates: dict[str, Any] = dict(changes.fields)
    if changes.rlimits:
        rlimits = {number: (soft, hard) for number, soft, hard in config.rlimits}
        rlimits.update(changes.rlimits)
        updates["rlimits"] = tuple((n, s, h) for n, (s, h) in sorted(rlimits.items()))
    for prefix, raw in changes.streams.items():
        current = getattr(config, prefix)
        merged = {**(stream_options(current) if current is not None else {}), **raw}
        try:
            updates[prefix] = parse_stream(merged)[0]
        except StreamOptionError as exc:
            raise CommandError(f"{prefix}.{exc.key or 'class'}: {exc.message}") from None
    if changes.env is not None:
        updates["env"] = MappingProxyType(dict(changes.env))
    if changes.hooks:
        hooks = dict(config.hooks)
        search = _hook_search_path(updates.get("env", config.env))
        for name, spec in changes.hooks.items():
            if spec is None:
                hooks.pop(name, None)  # Circus has no way to remove one; an empty value does here
                continue
            try:
                spec.resolve(search)
            except HookImportError as exc:
                raise CommandError(f"hooks.{name}: {exc}") from None
            hooks[name] = spec
        updates["hooks"] = MappingProxyType(hooks)
    if "uid" in updates and "gid" not in updates:
        uid = updates["uid"]
        updates["gid"] = None if uid is None else primary_group(uid)
    return dataclasses.replace(config, **updates)


def option_values(config: WatcherConfig, caller: Tier = Tier.ADMIN) -> dict[str, Any]:
    """Every option of a watcher, keyed as in the INI file; secrets only for the admin tier."""
    values: dict[str, Any] = {
        key: getattr(config, field) for key, (field, _declared) in _OPTIONS.items()
    }
    if caller >= Tier.ADMIN:
        values["env"] = dict(config.env)
    for number, soft, hard in config.rlimits:
        values[_RLIMIT_NAMES[number]] = _limit_text(soft, hard)
    for prefix in _STREAMS:
        stream = getattr(config, prefix)
        if stream is not None:
            values.update({f"{prefix}.{k}": v for k, v in stream_options(stream).items()})
    values.update({f"hooks.{name}": str(spec) for name, spec in config.hooks.items()})
    values.update(config.extra)
    return values


def _limit_text(soft: int, hard: int) -> str:
    def one(value: int) -> str:
        return "infinity" if value == resource.RLIM_INFINITY else str(value)

    return one(soft) if soft == hard else f"{one(soft)}:{one(hard)}"


def _hook_spec(name: str, value: Any) -> HookSpec | None:
    """`set NAME hooks.X dotted.callable[, ignore_errors]`; empty removes the hook."""
    if name not in HOOK_NAMES:
        raise CommandError(f"hooks.{name}: not a hook; hooks are {', '.join(HOOK_NAMES)}")
    if value in (None, ""):
        return None
    try:
        return HookSpec.parse(_as_text(value))
    except OptionValueError as exc:
        raise CommandError(f"hooks.{name}: {exc}") from None


def _hook_search_path(env: Mapping[str, str]) -> list[str]:
    return [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
