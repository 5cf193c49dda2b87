"""How the arbiter runs a plugin: a singleton watcher `plugin:NAME` running the plugin runner.

The command line and the environment built here are what `python -m circus_sd.plugins`
(__main__.py) reads: endpoints and the class on the command line (visible in `ps`), the options
as JSON in the environment (only the plugin's user and root can read it: they may hold secrets).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping
from types import MappingProxyType

from circus_sd.config.model import ArbiterConfig, Location, WatcherConfig
from circus_sd.endpoints import default_endpoint, default_pubsub_endpoint

OPTIONS_ENV = "CIRCUS_SD_PLUGIN_OPTIONS"
WATCHER_PREFIX = "plugin:"
# Circus starts plugins before the watchers (priority 1 > 0) and so stops them after.
DEFAULT_PRIORITY = 1


def watcher_name(plugin: str) -> str:
    """Circus's name of a plugin's watcher: the section's name."""
    return WATCHER_PREFIX + plugin


def plugin_watcher(
    name: str,
    class_path: str,
    options: Mapping[str, str],
    arbiter: ArbiterConfig,
    priority: int = DEFAULT_PRIORITY,
    location: Location | None = None,
) -> WatcherConfig:
    """The watcher that runs plugin `name` (class `class_path`) against this arbiter."""
    command = [sys.executable, "-m", "circus_sd.plugins", name]
    arguments = [
        "--use", class_path,
        "--endpoint", arbiter.endpoint or default_endpoint(),
        "--pubsub-endpoint", arbiter.pubsub_endpoint or default_pubsub_endpoint(),
        "--log-level", arbiter.loglevel,
    ]
    return WatcherConfig(
        name=watcher_name(name),
        cmd=shlex.join(command),
        args=shlex.join(arguments),
        singleton=True,
        priority=priority,
        # READY=1 once it listens to the events (plugins/base.py): the watchers started after
        # it (lower priority) have their first spawns seen.
        notify=True,
        # As Circus: the plugin sees the arbiter's environment (HOME, PYTHONPATH...).
        copy_env=True,
        # A plugin stops at once on SIGTERM; one that hangs should not hold the arbiter's stop.
        graceful_timeout=10.0,
        env=MappingProxyType({OPTIONS_ENV: json.dumps(dict(options), sort_keys=True)}),
        location=location,
    )
