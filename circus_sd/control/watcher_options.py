"""Watcher options as the control protocol shows and takes them (`options`, `get`, `set`, `add`)."""

from __future__ import annotations

import dataclasses
import resource
from collections.abc import Mapping
from typing import Any

from circus_sd.config.model import WatcherConfig
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
    values.update(config.extra)
    return values


def _limit_text(soft: int, hard: int) -> str:
    def one(value: int) -> str:
        return "infinity" if value == resource.RLIM_INFINITY else str(value)

    return one(soft) if soft == hard else f"{one(soft)}:{one(hard)}"
