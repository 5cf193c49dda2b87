"""What `[plugin:NAME] use = ...` names: circus-sd's shipped plugins, Circus's names for them,
or a dotted path to your own `Plugin` subclass."""

from __future__ import annotations

import importlib
import re

# Short names, usable as `use = autoscale`.
SHIPPED: dict[str, str] = {
    "autoscale": "circus_sd.plugins.autoscale.Autoscale",
    "resource_watcher": "circus_sd.plugins.resource_watcher.ResourceWatcher",
    "watchdog": "circus_sd.plugins.watchdog.WatchDog",
    "statsd": "circus_sd.plugins.statsd.StatsdEmitter",
    "full_stats": "circus_sd.plugins.statsd.FullStats",
    "prometheus": "circus_sd.plugins.prometheus.PrometheusExporter",
}

# Circus 0.19's plugin classes and what runs in their place.
CIRCUS_NAMES: dict[str, str] = {
    "circus.plugins.statsd.StatsdEmitter": SHIPPED["statsd"],
    "circus.plugins.statsd.FullStats": SHIPPED["full_stats"],
    "circus.plugins.resource_watcher.ResourceWatcher": SHIPPED["resource_watcher"],
    "circus.plugins.watchdog.WatchDog": SHIPPED["watchdog"],
}

# Not a process: its options are the watchers' `flapping.*` defaults (README: restart policy).
FLAPPING = "circus.plugins.flapping.Flapping"

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


class NoCounterpart(ValueError):
    """A Circus plugin circus-sd has nothing for (http_observer, redis_observer...)."""


def resolve(use: str) -> str:
    """The dotted path of the class that `use` names; ValueError if it names none."""
    use = use.strip()
    if use in SHIPPED:
        return SHIPPED[use]
    if use in CIRCUS_NAMES:
        return CIRCUS_NAMES[use]
    if use.startswith("circus.plugins."):
        raise NoCounterpart(f"Circus's {use} has no circus-sd counterpart")
    if not _DOTTED.fullmatch(use):
        raise ValueError(
            f"expected a shipped plugin ({', '.join(sorted(SHIPPED))}) or a dotted path "
            f"package.module.Class, got {use!r}"
        )
    return use


def is_shipped(path: str) -> bool:
    return path in SHIPPED.values()


def load_class(path: str) -> type:
    """Import the class at a dotted path; ImportError or AttributeError if it is not there."""
    module_name, _, attribute = path.rpartition(".")
    found = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(found, type):
        raise TypeError(f"{path} is not a class")
    return found
