"""Configuration: Circus INI files in, typed frozen dataclasses out."""

from circus_sd.config.loader import ConfigError, ConfigWarning, load_config
from circus_sd.config.model import ArbiterConfig, Config, WatcherConfig

__all__ = [
    "ArbiterConfig",
    "Config",
    "ConfigError",
    "ConfigWarning",
    "WatcherConfig",
    "load_config",
]
