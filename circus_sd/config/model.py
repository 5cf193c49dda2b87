"""The typed, frozen configuration: what the parser produces and everything else reads."""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from circus_sd.access import Tier
from circus_sd.config.env_file import env_file_paths
from circus_sd.config.options import (
    OptionValueError,
    boolean,
    byte_size,
    cgroup_mode,
    count_or_max,
    cpu_quota,
    endpoint_address,
    group_id,
    integer,
    log_level,
    memory_size,
    name_list,
    number,
    octal_mode,
    option,
    optional_integer,
    optional_text,
    port_number,
    regex,
    signal_number,
    socket_family,
    socket_kind,
    socket_protocol,
    text,
    user_id,
    weight,
)
from circus_sd.config.placeholders import has_placeholder
from circus_sd.config.streams import StreamConfig
from circus_sd.process_bound import PID_MAX_LIMIT

_EMPTY: Mapping[str, str] = MappingProxyType({})
# Options the endpoint_group may change with `set`: timings, counts and limits of what is
# configured. Every other option (what runs, as whom, with what environment, where its output
# goes) is admin-only: see Option.tier.
OPERATE = Tier.OPERATE


def _empty() -> Mapping[str, str]:
    # A factory because dataclasses refuse an unhashable default such as a mappingproxy.
    return _EMPTY


def _no_hooks() -> Mapping[str, HookSpec]:
    return MappingProxyType({})


# Circus's hooks, in the order a start and a stop call them (README: Hooks).
HOOK_NAMES = (
    "before_start",
    "before_spawn",
    "after_spawn",
    "after_start",
    "before_stop",
    "before_signal",
    "after_signal",
    "before_reap",
    "after_reap",
    "after_stop",
    "extended_stats",
)
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


class HookImportError(Exception):
    """A hook's callable cannot be imported; the message says why."""


@dataclasses.dataclass(frozen=True)
class HookSpec:
    """`hooks.NAME = dotted.callable[, ignore_errors]`: what to call, whether failures count."""

    target: str
    ignore_errors: bool = False

    @classmethod
    def parse(cls, raw: str) -> HookSpec:
        target, _, flag = raw.partition(",")
        target = target.strip()
        if not _DOTTED.fullmatch(target):
            raise OptionValueError(
                f"expected a dotted path to a callable, optionally `, true` "
                f"(package.module.function[, ignore_errors]), got {raw!r}"
            )
        return cls(target, boolean(flag) if flag.strip() else False)

    def resolve(self, search_path: Sequence[str] = ()) -> Callable[..., Any]:
        """Import the callable. `search_path` entries are appended to sys.path first (as Circus
        adds a watcher's PYTHONPATH), so the standard library always wins."""
        for entry in search_path:
            if entry and entry not in sys.path:
                sys.path.append(entry)
        parts = self.target.split(".")
        found: Any = None
        error: BaseException | None = None
        # The longest importable module prefix, then attributes (module.Class.method works).
        for split in range(len(parts) - 1, 0, -1):
            try:
                found = importlib.import_module(".".join(parts[:split]))
            except ModuleNotFoundError as exc:
                error = error or exc
                continue
            except Exception as exc:
                raise HookImportError(
                    f"importing {'.'.join(parts[:split])} failed: {type(exc).__name__}: {exc}"
                ) from exc
            try:
                for attribute in parts[split:]:
                    found = getattr(found, attribute)
            except AttributeError as exc:
                raise HookImportError(f"{self.target}: {exc}") from None
            break
        else:
            raise HookImportError(f"cannot import {self.target}: {error}")
        if not callable(found):
            raise HookImportError(f"{self.target} is not callable")
        return found  # type: ignore[no-any-return]

    def __str__(self) -> str:
        return f"{self.target}, true" if self.ignore_errors else self.target


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
    cmd: str = option(
        text, "", "Command to run; may include arguments (split like a shell).", spawn_time=True
    )
    args: str = option(text, "", "Arguments appended to `cmd`.", spawn_time=True)
    executable: str | None = option(
        optional_text, None, "Program to execute; `cmd`'s first word then only becomes argv[0]."
    )
    shell: bool = option(boolean, False, "Run `cmd` through `/bin/sh -c` (off: no shell).")
    shell_args: str = option(
        text, "", "Extra arguments after the shell command (with `shell`).", spawn_time=True
    )
    working_dir: str | None = option(
        optional_text, None, "Working directory of the processes (default: the arbiter's)."
    )
    uid: int | None = option(
        user_id, None, "User (name or uid) the processes run as.", sent_as_text=True
    )
    gid: int | None = option(
        group_id,
        None,
        "Group (name or gid); default: the user's primary group with `uid`.",
        sent_as_text=True,
    )
    copy_env: bool = option(boolean, False, "Start from the arbiter's environment.")
    copy_path: bool = option(boolean, False, "Copy the arbiter's PATH (and sys.path) to children.")
    env_file: tuple[str, ...] = option(
        env_file_paths,
        tuple[str, ...](),
        "Files of `KEY=VALUE` lines (systemd's `EnvironmentFile=` syntax) for the environment, "
        "over `[env]` sections; `-PATH`: may be missing. Read at start and at each reload.",
    )
    virtualenv: str | None = option(
        optional_text, None, "A virtualenv whose `bin` and site-packages the children use."
    )
    numprocesses: int = option(
        integer(0, PID_MAX_LIMIT),
        1,
        "Number of processes to run (see `[circus] max_processes`).",
        live=True,
        tier=OPERATE,
    )
    warmup_delay: float = option(
        number(), 0.0, "Seconds between two spawns.", live=True, tier=OPERATE
    )
    autostart: bool = option(boolean, True, "Start the watcher with the arbiter.", tier=OPERATE)
    respawn: bool = option(boolean, True, "Restart processes that exit.", live=True, tier=OPERATE)
    priority: int = option(
        integer(), 0, "Start order, highest first; stop order is reversed.", tier=OPERATE
    )
    singleton: bool = option(
        boolean, False, "At most one process, whatever `numprocesses` says.", tier=OPERATE
    )
    graceful_timeout: float = option(
        number(), 30.0, "Seconds between `stop_signal` and SIGKILL.", live=True,
        tier=OPERATE,
    )
    stop_signal: int = option(
        signal_number, int(signal.SIGTERM), "Signal that asks a process to stop.", live=True,
        tier=OPERATE,
    )
    stop_children: bool = option(
        boolean, False, "Also send `stop_signal` to the process's descendants.", live=True,
        tier=OPERATE,
    )
    send_hup: bool = option(
        boolean, False, "`reload` sends SIGHUP instead of restarting processes.", live=True,
        tier=OPERATE,
    )
    max_age: float = option(
        number(), 0.0, "Restart a process after this many seconds (0 = never).", live=True,
        tier=OPERATE,
    )
    max_age_variance: float = option(
        number(),
        30.0,
        "Random seconds added to `max_age`, so processes do not restart together.",
        live=True,
        tier=OPERATE,
    )
    umask: int | None = option(
        octal_mode,
        None,
        "umask of the processes, octal (default: the arbiter's).",
        sent_as_text=True,
    )
    close_child_stdin: bool = option(boolean, True, "Give processes /dev/null as stdin.")
    close_child_stdout: bool = option(boolean, False, "Discard the processes' stdout.")
    close_child_stderr: bool = option(boolean, False, "Discard the processes' stderr.")
    max_line: int = option(
        # At most 1 MiB: the arbiter holds up to this much of an unfinished line per pipe.
        integer(1, 1 << 20),
        65536,
        "Longest line (bytes) kept whole in streamed output; longer ones are split with a "
        "marker. At most 1048576 (1 MiB).",
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
        tier=OPERATE,
    )
    min_uptime: float = option(
        number(), 1.0, "A process that exits sooner counts as a failed start.", live=True,
        tier=OPERATE,
    )
    backoff_initial: float = option(
        number(), 0.1, "Delay before the restart after the first failed start.", live=True,
        tier=OPERATE,
    )
    backoff_max: float = option(
        number(), 30.0, "Upper bound of the restart delay.", live=True, tier=OPERATE
    )
    check_flapping: bool = option(
        boolean, True, "Pause the watcher when its processes keep failing.", live=True,
        tier=OPERATE,
    )
    flapping_attempts: int = option(
        integer(1),
        2,
        "Failed starts within `flapping.window` that make a watcher flap.",
        key="flapping.attempts",
        live=True,
        tier=OPERATE,
    )
    flapping_window: float = option(
        number(),
        1.0,
        "Window (seconds) for `flapping.attempts`.",
        key="flapping.window",
        live=True,
        tier=OPERATE,
    )
    flapping_retry_in: float = option(
        number(),
        7.0,
        "Seconds a flapping watcher is paused before it is started again.",
        key="flapping.retry_in",
        live=True,
        tier=OPERATE,
    )
    flapping_max_retry: int = option(
        integer(-1),
        5,
        "Pauses before a flapping watcher is given up (-1 = never).",
        key="flapping.max_retry",
        live=True,
        tier=OPERATE,
    )
    # cgroup v2 limits of the watcher's cgroup (README: cgroups); file values, None = not set.
    # Admin-only: a limit root set protects the machine; the group must not lift it.
    memory_max: str | None = option(
        memory_size,
        None,
        "cgroup memory.max: hard limit, e.g. 512M (the OOM killer acts above).",
        live=True,
    )
    memory_high: str | None = option(
        memory_size, None, "cgroup memory.high: throttle and reclaim above this.", live=True
    )
    memory_swap_max: str | None = option(memory_size, None, "cgroup memory.swap.max.", live=True)
    cpu_max: str | None = option(
        cpu_quota,
        None,
        "cgroup cpu.max: `50%` of one core, `max`, or `QUOTA PERIOD` (µs).",
        live=True,
    )
    cpu_weight: str | None = option(weight, None, "cgroup cpu.weight (1-10000).", live=True)
    io_weight: str | None = option(weight, None, "cgroup io.weight (1-10000).", live=True)
    pids_max: str | None = option(
        count_or_max, None, "cgroup pids.max: processes and threads of the watcher.", live=True
    )
    oom_group: bool = option(
        boolean, False, "cgroup memory.oom.group: an OOM kill takes the whole watcher.", live=True
    )
    notify: bool = option(
        boolean,
        False,
        "Give each process its own NOTIFY_SOCKET: it is ready once it sends READY=1 (sd_notify).",
    )
    ready_log_line: str | None = option(
        regex,
        None,
        "A process is ready once a line of its output matches this regular expression "
        "(Python `re`, searched in the first 4096 bytes of each line). Searching a process's "
        "lines stops once it is ready, stopping, or has used 0.5 s of CPU for it.",
    )
    ready_timeout: float = option(
        number(),
        30.0,
        "With `notify` or `ready_log_line`: a process not ready this many seconds after its "
        "spawn is a failed start.",
        live=True,
        tier=OPERATE,
    )
    watchdog_sec: float = option(
        number(),
        0.0,
        "With `notify`: restart a process that sends no WATCHDOG=1 for this long (0 = off).",
        live=True,
        tier=OPERATE,
    )
    after: tuple[str, ...] = option(
        name_list, tuple[str, ...](), "Watchers that must be active (ready) before this one starts."
    )
    use_sockets: bool = option(
        boolean,
        False,
        "Pass every `[socket:NAME]` to the processes; `$(circus.sockets.NAME)` is its fd number.",
    )
    stdin_socket: str | None = option(
        optional_text,
        None,
        "A `[socket:NAME]` the processes get as stdin, fd 0 (FastCGI programs listen there).",
    )
    listen_fds: tuple[str, ...] = option(
        name_list,
        tuple[str, ...](),
        "Sockets passed as systemd does: fds 3... with LISTEN_FDS, LISTEN_FDNAMES and "
        "LISTEN_PID, so `sd_listen_fds()` programs run unchanged.",
    )
    hook_timeout: float = option(
        number(),
        30.0,
        "Seconds a hook may take; past it, it counts as failed (see Hooks).",
        live=True,
        tier=OPERATE,
    )
    # Not options of their own: filled from `[env...]` sections and `rlimit_*` keys. These and
    # the streams and hooks below declare no tier: admin-only (field_tier).
    env: Mapping[str, str] = dataclasses.field(default_factory=_empty)
    # (RLIMIT_* number, soft, hard); applied in the child before exec.
    rlimits: tuple[tuple[int, int, int], ...] = ()
    # From `stdout_stream.*` / `stderr_stream.*` keys; None = the default stream.
    stdout_stream: StreamConfig | None = None
    stderr_stream: StreamConfig | None = None
    # Keys the parser did not know (warned about), kept for plugins as Circus does.
    extra: Mapping[str, str] = dataclasses.field(default_factory=_empty)
    # From `hooks.NAME` keys, by hook name. Live: hooks are looked up when they are due.
    hooks: Mapping[str, HookSpec] = dataclasses.field(
        default_factory=_no_hooks, metadata={"live": True}
    )
    # A `uid`/`gid` name this machine had no account for when the file was read: looked up again
    # at each spawn (spawn_plan.with_accounts), which fails until the account exists.
    user_name: str | None = None
    group_name: str | None = None
    location: Location | None = dataclasses.field(default=None, compare=False)

    @property
    def target_processes(self) -> int:
        return min(self.numprocesses, 1) if self.singleton else self.numprocesses

    @property
    def awaits_readiness(self) -> bool:
        """A process counts as started only once it says it is ready (sd_notify or a log line)."""
        return self.notify or self.ready_log_line is not None


def hook_search_path(config_dir: str | None, config: WatcherConfig) -> list[str]:
    """Where a watcher's hooks are imported from: its PYTHONPATH as Circus does (less entries
    only known per process), then the config file's directory (if there is a file)."""
    search = [
        entry
        for entry in config.env.get("PYTHONPATH", "").split(os.pathsep)
        if entry and not has_placeholder(entry)
    ]
    return [*search, config_dir] if config_dir is not None else search


@dataclasses.dataclass(frozen=True)
class SocketConfig:
    """One `[socket:NAME]` section: a socket the arbiter binds once and hands to watchers."""

    name: str
    host: str = option(
        text, "localhost", "Address to bind: a name or an IP address (`*` or empty: all)."
    )
    port: int = option(port_number, 8080, "Port; 0 = any free one (`listsockets` shows it).")
    path: str | None = option(
        optional_text, None, "An AF_UNIX socket at this file instead of `host` and `port`."
    )
    family: int | None = option(
        socket_family,
        None,
        "`AF_INET`, `AF_INET6` or `AF_UNIX`; default: AF_UNIX with `path`, AF_INET6 for an "
        "IPv6 `host`, else AF_INET.",
    )
    kind: int = option(
        socket_kind,
        socket.SOCK_STREAM,
        "`SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.",
        key="type",
    )
    proto: int = option(
        socket_protocol, 0, "Protocol: a name (`tcp`, `udp`, `mptcp`...) or number; 0 = default."
    )
    backlog: int = option(
        integer(0), 2048, "Connections the kernel queues until a process accepts them."
    )
    umask: int | None = option(
        octal_mode,
        None,
        "AF_UNIX: umask of the socket file, octal (`077`: only the arbiter's user may connect); "
        "unset: 000, every local user may connect (as with Circus).",
    )
    replace: bool = option(
        boolean,
        False,
        "AF_UNIX: replace whatever file is at `path` (without it, only a stale socket that "
        "nobody listens on is replaced).",
    )
    so_reuseport: bool = option(
        boolean,
        False,
        "SO_REUSEPORT: each process gets a socket of its own on the address and the kernel "
        "spreads connections over them (as Circus does).",
    )
    interface: str | None = option(
        optional_text, None, "Only traffic of this network interface (SO_BINDTODEVICE)."
    )
    blocking: bool = option(
        boolean, False, "Hand the socket over in blocking mode (default: non-blocking, as Circus)."
    )
    location: Location | None = dataclasses.field(default=None, compare=False)

    @property
    def address_family(self) -> socket.AddressFamily:
        """The family used: explicit, else AF_UNIX with `path`, AF_INET6 for an IPv6 host."""
        if self.path is not None:
            return socket.AF_UNIX
        if self.family is not None:
            return socket.AddressFamily(self.family)
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


@dataclasses.dataclass(frozen=True)
class ArbiterConfig:
    """The `[circus]` section."""

    endpoint: str | None = option(
        endpoint_address,
        None,
        "Control endpoint (ZMQ ROUTER); default `ipc:///run/circus-sd/control.sock` (root); "
        "`systemd:NAME`: the socket systemd passes under that name.",
    )
    pubsub_endpoint: str | None = option(
        endpoint_address,
        None,
        "Events endpoint (ZMQ XPUB); default `ipc:///run/circus-sd/events.sock`.",
    )
    output_endpoint: str | None = option(
        endpoint_address,
        None,
        "Child output (ZMQ XPUB, for `circusctl tail`); default: beside an ipc:// control "
        "socket, `ipc:///run/circus-sd/control-output.sock`; `off`: none.",
    )
    endpoint_owner: str | None = option(
        optional_text, None, "User who owns the ipc:// sockets and may operate (not admin) them."
    )
    endpoint_group: int | None = option(
        group_id, None, "Group whose members may use the control socket (status, start, incr...)."
    )
    max_connections: int = option(
        integer(1, 1 << 20),
        64,
        "Connections to the control, events and output sockets that users other than root and "
        "the arbiter's own user may hold, all together; more are shut down at once.",
    )
    max_connections_per_user: int = option(
        integer(1, 1 << 20),
        16,
        "Connections one such user may hold (tcp peers: `max_connections` only); more are "
        "shut down.",
    )
    max_message_size: int = option(
        byte_size(4096, 1 << 30),
        256 << 10,
        "Largest request the control socket takes (`64K`, `1M`); a larger one ends its "
        "connection before it is read.",
    )
    curve_secret_key: str | None = option(
        optional_text,
        None,
        "tcp:// endpoints: the server's CURVE secret key file (`circus-sd --make-curve-keys`).",
    )
    curve_clients: str | None = option(
        optional_text,
        None,
        "tcp:// endpoints: directory of the CURVE public keys of authorized clients.",
    )
    cgroup: str = option(
        cgroup_mode,
        "auto",
        "Per-watcher cgroups: `auto` (if a delegated v2 tree is writable), `required`, `off`.",
    )
    cgroup_root: str | None = option(
        optional_text,
        None,
        "A writable cgroup v2 directory to use instead of our own delegated one.",
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
    ready_wait: bool = option(
        boolean,
        False,
        "Tell systemd READY=1 only once the last watcher to start is ready too (`notify`, "
        "`ready_log_line`), not as soon as its processes run.",
    )
    debug: bool = option(boolean, False, "Same as `loglevel = debug`.")
    max_processes: int | None = option(
        optional_integer(1, PID_MAX_LIMIT),
        None,
        "Most processes of all watchers together: a `numprocesses` past it is refused (file, "
        "`incr`, `set`, `add`). Default: what the limits allow when circus-sd starts, the least "
        "of RLIMIT_NOFILE (hard) less a reserve of 32, RLIMIT_NPROC (not as root), "
        "kernel.pid_max and kernel.threads-max.",
    )


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole parsed configuration file with its includes."""

    path: str
    arbiter: ArbiterConfig
    watchers: tuple[WatcherConfig, ...]
    # `[socket:NAME]` sections, in file order.
    sockets: tuple[SocketConfig, ...] = ()

    def watcher(self, name: str) -> WatcherConfig | None:
        for watcher in self.watchers:
            if watcher.name == name:
                return watcher
        return None
