"""Watcher options as the control protocol shows and takes them (`options`, `get`, `set`, `add`)."""

from __future__ import annotations

import dataclasses
import os
import resource
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from circus_sd.config.model import HOOK_NAMES, HookImportError, HookSpec, WatcherConfig
from circus_sd.config.options import RLIMITS, OptionValueError, options_of, rlimit_pair
from circus_sd.config.streams import StreamOptionError, parse_stream, stream_options
from circus_sd.control.protocol import CommandError

_OPTIONS = options_of(WatcherConfig)
_RLIMIT_NAMES = {number: key for key, number in RLIMITS.items()}
_STREAMS = ("stdout_stream", "stderr_stream")


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def apply_options(config: WatcherConfig, options: Mapping[str, Any]) -> WatcherConfig:
    """A copy of `config` with `options` (Circus key -> JSON value) parsed and applied."""
    changes: dict[str, Any] = {}
    rlimits = {number: (soft, hard) for number, soft, hard in config.rlimits}
    streams: dict[str, dict[str, str]] = {}
    for key, value in options.items():
        key = key.lower()
        prefix, _, sub = key.partition(".")
        if prefix in _STREAMS and sub:
            if prefix not in streams:
                current = getattr(config, prefix)
                streams[prefix] = stream_options(current) if current is not None else {}
            streams[prefix][sub] = "" if value is None else _as_text(value)
        elif key in _OPTIONS:
            field, declared = _OPTIONS[key]
            try:
                changes[field] = declared.parse("" if value is None else _as_text(value))
            except OptionValueError as exc:
                raise CommandError(f"{key}: {exc}") from None
        elif key in RLIMITS:
            try:
                rlimits[RLIMITS[key]] = rlimit_pair("" if value is None else _as_text(value))
            except OptionValueError as exc:
                raise CommandError(f"{key}: {exc}") from None
        elif prefix == "hooks" and sub:
            hooks = dict(changes.get("hooks", config.hooks))
            if value in (None, ""):
                hooks.pop(sub, None)  # Circus has no way to remove one; an empty value does here
            else:
                hooks[sub] = _hook(sub, _as_text(value), config)
            changes["hooks"] = MappingProxyType(hooks)
        elif key == "env":
            if not isinstance(value, dict):
                raise CommandError("env: expected an object of NAME: value")
            changes["env"] = {str(k): str(v) for k, v in value.items()}
        else:
            raise CommandError(f"{key}: not a known option")
    for prefix, raw in streams.items():
        try:
            changes[prefix] = parse_stream(raw)[0]
        except StreamOptionError as exc:
            raise CommandError(f"{prefix}.{exc.key or 'class'}: {exc.message}") from None
    changes["rlimits"] = tuple((n, s, h) for n, (s, h) in sorted(rlimits.items()))
    return dataclasses.replace(config, **changes)


def option_values(config: WatcherConfig) -> dict[str, Any]:
    """Every option of a watcher, keyed as in the INI file."""
    values: dict[str, Any] = {
        key: getattr(config, field) for key, (field, _declared) in _OPTIONS.items()
    }
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


def _hook(name: str, raw: str, config: WatcherConfig) -> HookSpec:
    """`set NAME hooks.X dotted.callable[, ignore_errors]`: checked as the config file's are."""
    if name not in HOOK_NAMES:
        raise CommandError(f"hooks.{name}: not a hook; hooks are {', '.join(HOOK_NAMES)}")
    try:
        spec = HookSpec.parse(raw)
        spec.resolve([p for p in config.env.get("PYTHONPATH", "").split(os.pathsep) if p])
    except (OptionValueError, HookImportError) as exc:
        raise CommandError(f"hooks.{name}: {exc}") from None
    return spec
