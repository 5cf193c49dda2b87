"""Plugins: supervised processes that follow the arbiter's events and send it commands."""

from circus_sd.config.plugin_options import PluginOptionError, parse_options
from circus_sd.plugins.base import CommandFailed, Plugin, Timer, WatcherEvent, WatcherStatus

__all__ = [
    "CommandFailed",
    "Plugin",
    "PluginOptionError",
    "Timer",
    "WatcherEvent",
    "WatcherStatus",
    "parse_options",
]
