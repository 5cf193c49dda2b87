"""Which fields of a watcher changed, and whether they can be applied without a restart."""

from __future__ import annotations

import dataclasses

from circus_sd.config.model import WatcherConfig
from circus_sd.config.options import option_of

_FIELDS = {field.name: field for field in dataclasses.fields(WatcherConfig)}


def changed_options(old: WatcherConfig, new: WatcherConfig) -> list[str]:
    """The WatcherConfig fields that differ (where they come from, `location`, does not count)."""
    return [
        name
        for name, field in _FIELDS.items()
        if field.compare and getattr(old, name) != getattr(new, name)
    ]


def is_live(field_name: str) -> bool:
    """Can a change of this field be applied to running processes (declared `live`)?"""
    field = _FIELDS.get(field_name)
    if field is None:
        return False
    declared = option_of(field)
    return declared.live if declared is not None else bool(field.metadata.get("live"))


def needs_restart(old: WatcherConfig, new: WatcherConfig) -> bool:
    """Must the watcher's processes be restarted to run `new` instead of `old`?"""
    return not all(is_live(name) for name in changed_options(old, new))
