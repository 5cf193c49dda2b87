"""`circus-sd CONFIG`: run the arbiter in the foreground (or `--check` a config and exit)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import sys
from typing import TYPE_CHECKING

from circus_sd import __version__
from circus_sd.config.loader import ConfigError, load_config
from circus_sd.config.options import LOG_LEVELS

if TYPE_CHECKING:
    from circus_sd.arbiter import Arbiter
    from circus_sd.cgroups import Cgroups

EX_CONFIG = 78  # sysexits.h: a bad configuration; the systemd unit does not restart on it.

log = logging.getLogger("circus_sd")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="circus-sd",
        description="Run and watch processes described in a Circus-style INI file.",
    )
    parser.add_argument("config", nargs="?", help="configuration file (circus.ini)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the configuration and its includes, start nothing",
    )
    parser.add_argument(
        "--log-level",
        dest="loglevel",
        choices=LOG_LEVELS,
        help="log level (default: [circus] loglevel, else info)",
    )
    parser.add_argument(
        "--log-output",
        dest="logoutput",
        help="'-' for stderr, a file, or syslog://host:port?facility",
    )
    parser.add_argument(
        "--logger-config", dest="loggerconfig", help="a logging configuration file (INI or JSON)"
    )
    parser.add_argument("--pidfile", help="pidfile, locked while the arbiter runs")
    parser.add_argument("--make-curve-keys", metavar="DIR",
                        help="write CURVE key pairs for a tcp:// endpoint into DIR, then exit")
    parser.add_argument("--version", action="version", version=f"circus-sd {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.make_curve_keys:
        from circus_sd.curve import make_keys

        for path in make_keys(args.make_curve_keys):
            print(path)
        return 0
    if not args.config:
        print("circus-sd: a configuration file is required (see --help)", file=sys.stderr)
        return 2
    try:
        config, warnings = load_config(args.config)
    except ConfigError as exc:
        print(f"circus-sd: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.check:
        for warning in warnings:
            print(f"circus-sd: warning: {warning}", file=sys.stderr)
        print(f"{config.path}: OK, {len(config.watchers)} watcher(s)")
        return 0

    # Imported here so that `--check` and errors stay fast and light.
    from circus_sd.arbiter import Arbiter
    from circus_sd.cgroups import CgroupUnavailable
    from circus_sd.logging_setup import configure_logging
    from circus_sd.pidfile import PidFile, PidFileLocked
    from circus_sd.process import become_subreaper
    from circus_sd.spawn_plan import ChildDefaults
    from circus_sd.spawner import Spawner
    from circus_sd.systemd_notify import SystemdNotifier

    # First: it takes NOTIFY_SOCKET & co. out of the environment children are made from.
    notifier = SystemdNotifier()
    try:
        configure_logging(config.arbiter, args.loglevel, args.logoutput, args.loggerconfig)
    except (OSError, ValueError) as exc:
        print(f"circus-sd: {config.path}: [circus] logging: {exc}", file=sys.stderr)
        return EX_CONFIG
    for warning in warnings:
        log.warning("%s", warning)

    pidfile = None
    pidfile_path = args.pidfile or config.arbiter.pidfile
    if pidfile_path:
        pidfile = PidFile(pidfile_path)
        try:
            pidfile.acquire()
        except PidFileLocked as exc:
            log.error("%s", exc)
            return 1
    try:
        if config.arbiter.umask is not None:
            os.umask(config.arbiter.umask)
        defaults = ChildDefaults.capture()
        _raise_nofile_limit()
        if not become_subreaper():
            log.warning("could not become a child subreaper: orphans of children will escape")
        try:
            cgroups = _setup_cgroups(config.arbiter.cgroup, config.arbiter.cgroup_root)
        except CgroupUnavailable as exc:
            log.error("[circus] cgroup = required, but: %s", exc)
            return EX_CONFIG
        # Before any thread exists (pyzmq starts some): the spawner is a fork of this process
        # (and, with cgroups, already in the arbiter's leaf with us).
        spawner = Spawner.fork()
        arbiter = Arbiter(
            config,
            spawner,
            loader=load_config,
            defaults=defaults,
            notifier=notifier,
            cgroups=cgroups,
        )
        return asyncio.run(_serve(arbiter))
    finally:
        if pidfile is not None:
            pidfile.release()


async def _serve(arbiter: Arbiter) -> int:
    """Bind the control and event endpoints, then run the arbiter until it stops."""
    from circus_sd.control.server import ControlServer, EndpointError

    options = arbiter.config.arbiter
    server = None
    try:
        server = ControlServer(arbiter, options)
        server.bind()
    except EndpointError as exc:
        log.error("%s", exc)
        if server is not None:
            await server.close()
        arbiter.spawner.close()
        os.waitpid(arbiter.spawner.pid, 0)
        return 1 if exc.in_use else EX_CONFIG
    serving = asyncio.create_task(server.serve())
    try:
        return await arbiter.run()
    finally:
        serving.cancel()
        await server.close()


def _setup_cgroups(mode: str, cgroup_root: str | None) -> Cgroups | None:
    """Our delegated cgroup v2 tree; None when unavailable (said once); raises if required."""
    from circus_sd.cgroups import Cgroups, CgroupUnavailable

    if mode == "off":
        log.info("per-watcher cgroups are off (cgroup = off): process groups track processes")
        return None
    try:
        cgroups = Cgroups.setup(cgroup_root)
    except (CgroupUnavailable, OSError) as exc:
        if mode == "required":
            raise CgroupUnavailable(str(exc)) from None
        log.info("per-watcher cgroups are off: %s; process groups track processes", exc)
        return None
    controllers = ", ".join(sorted(cgroups.controllers)) or "none"
    log.info("per-watcher cgroups under %s (controllers: %s)", cgroups.root, controllers)
    return cgroups


def _raise_nofile_limit() -> None:
    """Two pipes and a pidfd per child: take all the fds we may; children get the original."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    sys.exit(main())
