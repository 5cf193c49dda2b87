"""`python -m circus_sd.plugins NAME --use CLASS ...`: run one plugin until SIGTERM.

The arbiter starts this as the watcher `plugin:NAME` (launch.py builds the command line); it can
also be run by hand against a running arbiter, with `--option KEY=VALUE` for the options.
Exit status: 0 after a stop, 78 (EX_CONFIG) when the plugin or its options are wrong, 1 when it
fails while running (the arbiter then restarts it, with backoff).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from circus_sd.config.options import LOG_LEVELS
from circus_sd.config.plugin_catalog import load_class, resolve
from circus_sd.config.plugin_options import PluginOptionError
from circus_sd.config.plugin_watchers import OPTIONS_ENV
from circus_sd.plugins.base import Plugin

EX_CONFIG = 78

log = logging.getLogger("circus_sd.plugins")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m circus_sd.plugins", description="Run a circus-sd plugin."
    )
    parser.add_argument("name", help="the plugin's name (its [plugin:NAME] section)")
    parser.add_argument("--use", required=True, help="a shipped plugin or package.module.Class")
    parser.add_argument("--endpoint", help="the arbiter's control endpoint")
    parser.add_argument("--pubsub-endpoint", help="the arbiter's events endpoint")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help=f"a plugin option (after those in ${OPTIONS_ENV}, a JSON object)",
    )
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    return parser.parse_args(argv)


def plugin_options(args: argparse.Namespace) -> dict[str, str]:
    options: dict[str, str] = {}
    raw = os.environ.get(OPTIONS_ENV)
    if raw:
        decoded = json.loads(raw)
        if not isinstance(decoded, dict):
            raise ValueError(f"${OPTIONS_ENV} is not a JSON object")
        options.update({str(k): str(v) for k, v in decoded.items()})
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option: expected KEY=VALUE, got {item!r}")
        options[key.strip().lower()] = value
    return options


def create(args: argparse.Namespace) -> Plugin:
    """The plugin object; raises ValueError (or an import error) with what is wrong."""
    path = resolve(args.use)
    cls = load_class(path)
    if not issubclass(cls, Plugin):
        raise TypeError(f"{path} is not a circus_sd.plugins.Plugin subclass")
    plugin: Plugin = cls(
        args.name,
        plugin_options(args),
        endpoint=args.endpoint,
        pubsub_endpoint=args.pubsub_endpoint,
    )
    return plugin


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(levelname)s %(message)s",
    )
    try:
        plugin = create(args)
    except PluginOptionError as error:
        log.error("[plugin:%s] %s", args.name, error)
        return EX_CONFIG
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        log.error("[plugin:%s] use = %s: %s", args.name, args.use, error)
        return EX_CONFIG
    log.info("plugin %s (%s) started, pid %d", args.name, type(plugin).__qualname__, os.getpid())
    try:
        return asyncio.run(plugin.run())
    except Exception:
        log.exception("plugin %s failed", args.name)
        return 1


if __name__ == "__main__":
    sys.exit(main())
