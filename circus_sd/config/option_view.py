"""A watcher's options as `options`, `get` and hooks see them: every key Circus 0.19 shows, with
its JSON type, beside circus-sd's own keys as the INI file spells them."""

from __future__ import annotations

import os
import resource
from typing import Any

from circus_sd.access import Tier
from circus_sd.config.model import WatcherConfig
from circus_sd.config.options import RLIMITS, OptionValueError, boolean
from circus_sd.config.streams import stream_options
from circus_sd.config.watcher_keys import OPTIONS, STREAMS

_RLIMIT_NAMES = {number: key for key, number in RLIMITS.items()}


def option_values(config: WatcherConfig, caller: Tier = Tier.ADMIN) -> dict[str, Any]:
    """Every option of a watcher; `env` (secrets) only for the admin tier."""
    values: dict[str, Any] = {
        key: getattr(config, field) for key, (field, _declared) in OPTIONS.items()
    }
    for number, soft, hard in config.rlimits:
        values[_RLIMIT_NAMES[number]] = _limit_text(soft, hard)
    for prefix in STREAMS:
        stream = getattr(config, prefix)
        if stream is not None:
            values.update({f"{prefix}.{k}": v for k, v in stream_options(stream).items()})
    values.update({f"hooks.{name}": str(spec) for name, spec in config.hooks.items()})
    # Free-form keys, as Circus keeps them (strings); Circus's own keys below win over them.
    values.update(config.extra)
    values.update(_circus_values(config))
    if caller >= Tier.ADMIN:
        values["env"] = dict(config.env)
    return values


def _circus_values(config: WatcherConfig) -> dict[str, Any]:
    """The keys of Circus's `Watcher.optnames` with the types its clients get from Circus."""
    return {
        # Circus parses these two (and max_age*) with int(): a client may index or range() them.
        "numprocesses": config.numprocesses,
        "warmup_delay": _whole(config.warmup_delay),
        "max_age": _whole(config.max_age),
        "max_age_variance": _whole(config.max_age_variance),
        "graceful_timeout": float(config.graceful_timeout),
        # Where the processes run: unset, they inherit the arbiter's directory.
        "working_dir": config.working_dir or os.getcwd(),
        "shell_args": config.shell_args or None,
        # Circus's stream settings as written (strings), `class` included (Circus drops it).
        "stdout_stream_conf": _stream_conf(config, "stdout_stream"),
        "stderr_stream_conf": _stream_conf(config, "stderr_stream"),
        "on_demand": _flag(config.extra.get("on_demand", "")),
    }


def _whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _stream_conf(config: WatcherConfig, prefix: str) -> dict[str, str]:
    stream = getattr(config, prefix)
    return dict(stream_options(stream)) if stream is not None else {}


def _flag(text: str) -> bool:
    try:
        return boolean(text)
    except OptionValueError:
        return False


def _limit_text(soft: int, hard: int) -> str:
    def one(value: int) -> str:
        return "infinity" if value == resource.RLIM_INFINITY else str(value)

    return one(soft) if soft == hard else f"{one(soft)}:{one(hard)}"
