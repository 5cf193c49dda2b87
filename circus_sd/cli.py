"""`circus-sd CONFIG`: run the arbiter in the foreground (or `--check` a config and exit)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import resource
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from circus_sd import __version__

if TYPE_CHECKING:
    import asyncio

    from circus_sd.arbiter import Arbiter
    from circus_sd.cgroups import Cgroups
    from circus_sd.config.loader import ConfigWarning
    from circus_sd.config.model import Config
    from circus_sd.control.server import ControlServer
    from circus_sd.handover import Handover
    from circus_sd.spawner import Spawner

EX_CONFIG = 78  # sysexits.h: a bad configuration; the systemd unit does not restart on it.

log = logging.getLogger("circus_sd")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from circus_sd.config.options import LOG_LEVELS

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
        "--strict",
        action="store_true",
        help="treat the configuration's warnings as errors (exit 78), e.g. with --check in CI",
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


def main(argv: list[str] | None = None) -> int:  # returns only for --check and errors
    # No cyclic garbage collection while the start imports everything (modules, classes and
    # functions that live as long as we do): some 50 collections, 8-12 ms of the start. It
    # resumes once the arbiter runs (_collect_from_now_on). So the config's modules are
    # imported here, not with this module.
    gc.disable()
    if os.environ.get("CIRCUS_SD_HANDOVER_CHECK_FD"):
        # Run by an arbiter about to re-execute: can this code read its state?
        from circus_sd.reexec import answer_check

        return answer_check()
    args = parse_args(argv)
    if args.make_curve_keys:
        from circus_sd.curve import make_keys

        for path in make_keys(args.make_curve_keys):
            print(path)
        return 0
    if not args.config:
        print("circus-sd: a configuration file is required (see --help)", file=sys.stderr)
        return 2
    from circus_sd.config.loader import ConfigError, load_config

    handover = _take_handover()
    warnings: list[ConfigWarning] = []
    try:
        if handover is not None:
            # Re-executed: the running configuration (what set/add/rm made of it), not the file.
            config = handover.config
        else:
            config, warnings = load_config(args.config)
    except ConfigError as exc:
        print(f"circus-sd: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.strict and warnings:
        for warning in warnings:
            print(f"circus-sd: error (--strict): {warning}", file=sys.stderr)
        return EX_CONFIG
    if args.check:
        for warning in warnings:
            print(f"circus-sd: warning: {warning}", file=sys.stderr)
        print(f"{config.path}: OK, {len(config.watchers)} watcher(s)")
        return 0

    # The spawner first: every child starts as a copy of it, so it is forked while this process
    # is still small (nothing imported yet beyond the config loader) and has no thread.
    if config.arbiter.umask is not None:
        os.umask(config.arbiter.umask)
    from circus_sd.spawner import fork_spawner

    try:
        spawner_pid, spawner_socket = fork_spawner()
    except OSError as exc:
        print(f"circus-sd: cannot start the spawner: {exc}", file=sys.stderr)
        return 1
    with _without_tls():
        import asyncio  # noqa: F401  (its first import)
    from circus_sd.spawner import Spawner

    # fork_spawner again whenever the spawner is lost (killed, stopped, hung).
    spawner = Spawner(spawner_pid, spawner_socket, start=fork_spawner)
    try:
        status = _run(args, config, warnings, spawner, handover)
    except BaseException as exc:
        # Not left to the interpreter's exit: its traceback on stderr and logging's atexit
        # flush can wait forever for an output nobody reads. Logged; the same exit as a run's.
        status = _failure_status(exc)
    # A no-op after a normal run (the arbiter ended it); else end it here.
    try:
        spawner.stop()
    except Exception:
        log.exception("could not stop the spawner")
        status = status or 1
    from circus_sd.logging_setup import stop_logging

    # The log's writer thread gets a bounded time to write what is queued. An output that
    # did not take it (a pipe nobody reads) is not flushed: that would wait for the writer.
    written = stop_logging()
    if written:
        _settle_standard_streams()
    # Everything is stopped, closed and logged: Python's own teardown of every module would
    # only delay the exit that `systemctl stop` waits for (30 ms here). atexit handlers (a
    # hook's) do not run; stdio is flushed here, as os._exit would not.
    if written:
        logging.shutdown()
        _settle_standard_streams()
    os._exit(status)


def _take_handover() -> Handover | None:
    """The state of the previous program of this arbiter, when it re-executed."""
    if not os.environ.get("CIRCUS_SD_HANDOVER_FD"):
        return None
    from circus_sd import reexec
    from circus_sd.handover import HandoverError

    try:
        return reexec.take_handover()
    except HandoverError as exc:
        # Passed the check, yet unusable: the file's configuration starts afresh, and each
        # watcher takes over its workers, found by their marks (adoption.py). What the state
        # described goes (the endpoints' locks, the output pipes), as with a restart.
        print(f"circus-sd: re-executed, but {exc}: taking over the processes it left",
              file=sys.stderr)
        for fd in exc.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        return None


def _failure_status(exc: BaseException) -> int:
    """The exit status for what `_run` raised, logged (through the log's queue, if set up)."""
    if isinstance(exc, SystemExit):
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        log.error("%s", exc.code)
        return 1
    log.critical("circus-sd failed: %s", exc, exc_info=exc)
    return 1


@contextlib.contextmanager
def _without_tls() -> Iterator[None]:
    """Imports in this block find no `ssl`: asyncio, imported here first, then leaves out TLS,
    which the arbiter never uses, and OpenSSL with it (4 MB of the arbiter's 32 MB resident).
    `ssl` is importable again afterwards (a hook may use it, urllib too), but asyncio in this
    process stays without TLS (a hook cannot open an asyncio TLS connection)."""
    if "ssl" in sys.modules:
        yield
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        del sys.modules["ssl"]


def _settle_standard_streams() -> None:
    """Flush stdout and stderr now; one that cannot be flushed is pointed at /dev/null.

    Under systemd they are journald's stream sockets: a journald restarted meanwhile has closed
    them, and Python, failing to flush them at exit, would turn our exit status into 120, which
    systemd reports as a failed service.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)


def _run(
    args: argparse.Namespace,
    config: Config,
    warnings: list[ConfigWarning],
    spawner: Spawner,
    handover: Handover | None,
) -> int:
    """Everything after the spawner exists: logging, locks, limits, cgroups, the arbiter."""
    import asyncio

    from circus_sd.arbiter import Arbiter
    from circus_sd.cgroups import CgroupUnavailable
    from circus_sd.config.loader import load_config
    from circus_sd.config.process_env import ChildDefaults
    from circus_sd.logging_setup import configure_logging
    from circus_sd.pidfile import PidFile, PidFileError, PidFileLocked
    from circus_sd.process import become_subreaper
    from circus_sd.sockets import ListeningSockets, SystemdSockets
    from circus_sd.systemd_notify import SystemdNotifier

    # First: what systemd handed us leaves the environment children are made from: NOTIFY_SOCKET
    # & co. (the notifier), LISTEN_* and the sockets they describe (socket activation).
    notifier = SystemdNotifier()
    systemd_sockets = SystemdSockets.take()
    try:
        configure_logging(config.arbiter, args.loglevel, args.logoutput, args.loggerconfig)
    except (OSError, ValueError) as exc:
        print(f"circus-sd: {config.path}: [circus] logging: {exc}", file=sys.stderr)
        return EX_CONFIG
    for warning in warnings:
        log.warning("%s", warning)
    for problem in systemd_sockets.warnings:
        log.warning("%s", problem)

    pidfile = None
    pidfile_path = args.pidfile or config.arbiter.pidfile
    if handover is not None and handover.pidfile is not None:
        pidfile = PidFile.adopt(handover.pidfile)  # locked all along
    elif pidfile_path:
        pidfile = PidFile(pidfile_path)
        try:
            pidfile.acquire()
        except PidFileLocked as exc:
            log.error("%s", exc)
            return 1
        except PidFileError as exc:  # e.g. in a directory another user may change
            log.error("%s", exc)
            return EX_CONFIG
    try:
        # What children get from us is what the first program of this arbiter found.
        defaults = handover.defaults if handover is not None else ChildDefaults.capture()
        _raise_nofile_limit()
        if not become_subreaper():
            log.warning("could not become a child subreaper: orphans of children will escape")
        try:
            cgroups = _setup_cgroups(
                config.arbiter.cgroup, config.arbiter.cgroup_root, spawner.pid
            )
        except CgroupUnavailable as exc:
            log.error("[circus] cgroup = required, but: %s", exc)
            return EX_CONFIG
        arbiter = Arbiter(
            config,
            spawner,
            loader=load_config,
            defaults=defaults,
            notifier=notifier,
            cgroups=cgroups,
            sockets=ListeningSockets(systemd_sockets.sockets),
            handover=handover,
        )
        arbiter.pidfile = pidfile
        locks = handover.endpoint_locks if handover is not None else {}
        return asyncio.run(_serve(arbiter, locks))
    finally:
        if pidfile is not None:
            pidfile.release()


class _Control:
    """The arbiter's control server, as its re-execution sees it (arbiter.ControlLink): closed
    for the switch, opened again on the same endpoints if the switch is given up."""

    def __init__(self, arbiter: Arbiter) -> None:
        self._arbiter = arbiter
        # Kept once closed: the work of its commands may still run (commands_in_flight).
        self._server: ControlServer | None = None
        self._serving: asyncio.Task[None] | None = None
        self._closed = True

    def open(self, held_locks: dict[str, int]) -> None:
        """Bind the control and event endpoints and serve; EndpointError if one cannot be."""
        import asyncio

        from circus_sd.control.server import ControlServer

        server = self._server = ControlServer(self._arbiter, self._arbiter.config.arbiter)
        self._closed = False
        server.held_locks = dict(held_locks)
        server.bind()
        self._serving = asyncio.create_task(server.serve())

    async def close(self, keep_locks: bool = False) -> dict[str, int]:
        """Stop serving and close; with `keep_locks`, the endpoints' locks, by path."""
        import asyncio

        if self._serving is not None:
            self._serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._serving
            self._serving = None
        if self._closed or self._server is None:
            return {}
        self._closed = True
        return await self._server.close(keep_locks)

    def commands_in_flight(self) -> list[str]:
        return self._server.commands_in_flight() if self._server is not None else []

    async def wait_for_commands(self, timeout: float) -> list[str]:
        return await self._server.wait_for_commands(timeout) if self._server else []


async def _serve(arbiter: Arbiter, held_locks: dict[str, int]) -> int:
    """Bind the control and event endpoints, then run the arbiter until it stops."""
    from circus_sd.control.server import EndpointError

    control = _Control(arbiter)
    try:
        control.open(held_locks)
    except EndpointError as exc:
        log.error("%s", exc)
        await control.close()
        return 1 if exc.in_use else EX_CONFIG
    arbiter.control = control
    _collect_from_now_on()
    try:
        return await arbiter.run()
    finally:
        await control.close()


def _collect_from_now_on() -> None:
    """Garbage collection again, now that what the start needed is imported. What exists is
    frozen first: never scanned again (reference counting still frees what is dropped), so no
    collection of the start's objects delays the first spawns. The few cycles the start left
    behind (about 450 objects, 0.1 MB) stay: a full collection to free them would cost about
    what this saves."""
    gc.freeze()
    gc.enable()


def _setup_cgroups(mode: str, cgroup_root: str | None, spawner_pid: int) -> Cgroups | None:
    """Our delegated cgroup v2 tree; None when unavailable (said once); raises if required."""
    from circus_sd.cgroups import Cgroups, CgroupUnavailable

    if mode == "off":
        log.info("per-watcher cgroups are off (cgroup = off): process groups track processes")
        return None
    try:
        # The spawner too: a cgroup whose children get controllers may hold no process itself.
        cgroups = Cgroups.setup(cgroup_root, extra_pids=(spawner_pid,))
    except (CgroupUnavailable, OSError) as exc:
        if mode == "required":
            raise CgroupUnavailable(str(exc)) from None
        log.info("per-watcher cgroups are off: %s; process groups track processes", exc)
        return None
    controllers = ", ".join(sorted(cgroups.controllers)) or "none"
    log.info("per-watcher cgroups under %s (controllers: %s)", cgroups.root, controllers)
    return cgroups


# The most descriptors root raises its own hard limit to, outside systemd: a million, about
# 300,000 processes (the shipped unit's LimitNOFILE says the same).
NOFILE_CEILING = 1 << 20


def _raise_nofile_limit() -> None:
    """Two pipes and a pidfd per child: take all the fds we may; children get the original.

    Outside systemd, root also raises its hard limit, up to the kernel's fs.nr_open: a root
    shell's inherited hard limit (often a few thousand) would otherwise bound what one arbiter
    can run far below what the machine can. Under systemd the unit's LimitNOFILE is the
    administrator's word, and stays. Without CAP_SYS_RESOURCE the hard limit stays too."""
    from circus_sd.process_bound import kernel_number

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if os.geteuid() == 0 and not os.environ.get("INVOCATION_ID"):
        ceiling = min(kernel_number("/proc/sys/fs/nr_open") or hard, NOFILE_CEILING)
        if ceiling > hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, ceiling))
                log.info("RLIMIT_NOFILE raised to %d (it was %d, hard %d)", ceiling, soft, hard)
                return
            except (OSError, ValueError) as exc:
                log.debug("RLIMIT_NOFILE stays at %d: %s", hard, exc)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    sys.exit(main())
