"""The typed, frozen configuration: what the parser produces and everything else reads."""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Mapping
from types import MappingProxyType

from circus_sd.config.options import (
    boolean,
    group_id,
    integer,
    log_level,
    name_list,
    number,
    octal_mode,
    option,
    optional_text,
    signal_number,
    text,
    user_id,
)
from circus_sd.config.streams import StreamConfig

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _empty() -> Mapping[str, str]:
    # A factory because dataclasses refuse an unhashable default such as a mappingproxy.
    return _EMPTY


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a value came from, for error messages: `file:line`."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclasses.dataclass(frozen=True)
class WatcherConfig:
    """One `[watcher:NAME]` section: a command run as `numprocesses` processes."""

    name: str
    cmd: str = option(text, "", "Command to run; may include arguments (split like a shell).")
    args: str = option(text, "", "Arguments appended to `cmd`.")
    executable: str | None = option(
        optional_text, None, "Program to execute; `cmd`'s first word then only becomes argv[0]."
    )
    shell: bool = option(boolean, False, "Run `cmd` through `/bin/sh -c` (off: no shell).")
    shell_args: str = option(text, "", "Extra arguments after the shell command (with `shell`).")
    working_dir: str | None = option(
        optional_text, None, "Working directory of the processes (default: the arbiter's)."
    )
    uid: int | None = option(user_id, None, "User (name or uid) the processes run as.")
    gid: int | None = option(
        group_id, None, "Group (name or gid); default: the user's primary group with `uid`."
    )
    copy_env: bool = option(boolean, False, "Start from the arbiter's environment.")
    copy_path: bool = option(boolean, False, "Copy the arbiter's PATH (and sys.path) to children.")
    virtualenv: str | None = option(
        optional_text, None, "A virtualenv whose `bin` and site-packages the children use."
    )
    numprocesses: int = option(integer(0), 1, "Number of processes to run.", live=True)
    warmup_delay: float = option(number(), 0.0, "Seconds between two spawns.", live=True)
    autostart: bool = option(boolean, True, "Start the watcher with the arbiter.")
    respawn: bool = option(boolean, True, "Restart processes that exit.", live=True)
    priority: int = option(integer(), 0, "Start order, highest first; stop order is reversed.")
    singleton: bool = option(boolean, False, "At most one process, whatever `numprocesses` says.")
    graceful_timeout: float = option(
        number(), 30.0, "Seconds between `stop_signal` and SIGKILL.", live=True
    )
    stop_signal: int = option(
        signal_number, int(signal.SIGTERM), "Signal that asks a process to stop.", live=True
    )
    stop_children: bool = option(
        boolean, False, "Also send `stop_signal` to the process's descendants.", live=True
    )
    send_hup: bool = option(
        boolean, False, "`reload` sends SIGHUP instead of restarting processes.", live=True
    )
    max_age: float = option(
        number(), 0.0, "Restart a process after this many seconds (0 = never).", live=True
    )
    max_age_variance: float = option(
        number(),
        30.0,
        "Random seconds added to `max_age`, so processes do not restart together.",
        live=True,
    )
    umask: int | None = option(
        octal_mode, None, "umask of the processes, octal (default: the arbiter's)."
    )
    close_child_stdin: bool = option(boolean, True, "Give processes /dev/null as stdin.")
    close_child_stdout: bool = option(boolean, False, "Discard the processes' stdout.")
    close_child_stderr: bool = option(boolean, False, "Discard the processes' stderr.")
    max_line: int = option(
        integer(1),
        65536,
        "Longest line (bytes) kept whole in streamed output; longer ones are split with a marker.",
    )
    backpressure_timeout: float = option(
        number(),
        5.0,
        "Seconds a process's output may wait for a slow stream before lines are dropped.",
    )
    max_retry: int = option(
        integer(-1),
        5,
        "Consecutive failed execs before the watcher stops (-1 = forever).",
        live=True,
    )
    min_uptime: float = option(
        number(), 1.0, "A process that exits sooner counts as a failed start.", live=True
    )
    backoff_initial: float = option(
        number(), 0.1, "Delay before the restart after the first failed start.", live=True
    )
    backoff_max: float = option(number(), 30.0, "Upper bound of the restart delay.", live=True)
    check_flapping: bool = option(
        boolean, True, "Pause the watcher when its processes keep failing.", live=True
    )
    flapping_attempts: int = option(
        integer(1),
        2,
        "Failed starts within `flapping.window` that make a watcher flap.",
        key="flapping.attempts",
        live=True,
    )
    flapping_window: float = option(
        number(),
        1.0,
        "Window (seconds) for `flapping.attempts`.",
        key="flapping.window",
        live=True,
    )
    flapping_retry_in: float = option(
        number(),
        7.0,
        "Seconds a flapping watcher is paused before it is started again.",
        key="flapping.retry_in",
        live=True,
    )
    flapping_max_retry: int = option(
        integer(-1),
        5,
        "Pauses before a flapping watcher is given up (-1 = never).",
        key="flapping.max_retry",
        live=True,
    )
    notify: bool = option(
        boolean, False,
        "Give each process its own NOTIFY_SOCKET: it is ready once it sends READY=1 (sd_notify).",
    )
    ready_timeout: float = option(
        number(), 30.0,
        "With `notify`: a process not ready this many seconds after its spawn is a failed start.",
        live=True,
    )
    watchdog_sec: float = option(
        number(), 0.0,
        "With `notify`: restart a process that sends no WATCHDOG=1 for this long (0 = off).",
        live=True,
    )
    after: tuple[str, ...] = option(
        name_list, tuple[str, ...](), "Watchers that must be active (ready) before this one starts."
    )
    # Not options of their own: filled from `[env...]` sections and `rlimit_*` keys.
    env: Mapping[str, str] = dataclasses.field(default_factory=_empty)
    # (RLIMIT_* number, soft, hard); applied in the child before exec.
    rlimits: tuple[tuple[int, int, int], ...] = ()
    # From `stdout_stream.*` / `stderr_stream.*` keys; None = the default stream.
    stdout_stream: StreamConfig | None = None
    stderr_stream: StreamConfig | None = None
    # Keys the parser did not know (warned about), kept for plugins as Circus does.
    extra: Mapping[str, str] = dataclasses.field(default_factory=_empty)
    location: Location | None = dataclasses.field(default=None, compare=False)

    @property
    def target_processes(self) -> int:
        return min(self.numprocesses, 1) if self.singleton else self.numprocesses


@dataclasses.dataclass(frozen=True)
class ArbiterConfig:
    """The `[circus]` section."""

    endpoint: str | None = option(
        optional_text,
        None,
        "Control endpoint (ZMQ ROUTER); default `ipc:///run/circus-sd/control.sock` (root).",
    )
    pubsub_endpoint: str | None = option(
        optional_text,
        None,
        "Events endpoint (ZMQ PUB); default `ipc:///run/circus-sd/events.sock`.",
    )
    endpoint_owner: str | None = option(
        optional_text, None, "User who owns the ipc:// sockets and may operate (not admin) them."
    )
    endpoint_group: int | None = option(
        group_id, None, "Group whose members may use the control socket (status, start, incr...)."
    )
    curve_secret_key: str | None = option(
        optional_text, None,
        "tcp:// endpoints: the server's CURVE secret key file (`circus-sd --make-curve-keys`).",
    )
    curve_clients: str | None = option(
        optional_text, None,
        "tcp:// endpoints: directory of the CURVE public keys of authorized clients.",
    )
    insecure_tcp: bool = option(
        boolean, False, "Allow a tcp:// endpoint on a non-loopback address without CURVE keys."
    )
    pidfile: str | None = option(optional_text, None, "Write the arbiter's pid here (locked).")
    umask: int | None = option(octal_mode, None, "umask of the arbiter and its children, octal.")
    loglevel: str = option(log_level, "info", "Arbiter log level.")
    logoutput: str = option(
        text, "-", "Where the arbiter logs: `-` (stderr), a file, or syslog://host:port?facility."
    )
    loggerconfig: str | None = option(
        optional_text, None, "A logging configuration file (INI or JSON) instead of the above."
    )
    warmup_delay: float = option(number(), 0.0, "Seconds between starting two watchers.")
    debug: bool = option(boolean, False, "Same as `loglevel = debug`.")


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole parsed configuration file with its includes."""

    path: str
    arbiter: ArbiterConfig
    watchers: tuple[WatcherConfig, ...]

    def watcher(self, name: str) -> WatcherConfig | None:
        for watcher in self.watchers:
            if watcher.name == name:
                return watcher
        return None
