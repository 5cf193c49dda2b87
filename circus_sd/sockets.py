"""Listening sockets: bound once by the arbiter, or adopted from systemd, and handed to watchers.

The arbiter holds every `[socket:NAME]` from start-up to exit, so connections wait in the kernel's
queue while a watcher's processes restart, and none is refused. Sockets systemd passes us
(socket activation: LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, fds from 3) are adopted by name
instead of bound. All the I/O is here; `SocketConfig` says what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import stat
import struct
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from circus_sd.config.model import SocketConfig

log = logging.getLogger("circus_sd")

SD_LISTEN_FDS_START = 3
LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_CONNECTED_KINDS = (socket.SOCK_STREAM, socket.SOCK_SEQPACKET)


class SocketError(Exception):
    """A socket that cannot be bound or adopted; str() names its section."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"[socket:{name}] {message}")
        self.name = name


# -- what systemd handed us ----------------------------------------------------------------------


def parse_listen_env(environ: Mapping[str, str], pid: int) -> list[tuple[int, str]]:
    """(fd, name) of each socket systemd passed to process `pid`, as sd_listen_fds_with_names.

    Nothing unless LISTEN_PID is `pid` (the variables may be a parent's, inherited by mistake).
    A missing name is "unknown", as systemd's library says.
    """
    if environ.get("LISTEN_PID", "").strip() != str(pid):
        return []
    try:
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    raw_names = environ.get("LISTEN_FDNAMES", "")
    names = raw_names.split(":") if raw_names else []
    return [
        (SD_LISTEN_FDS_START + i, names[i] if i < len(names) and names[i] else "unknown")
        for i in range(max(count, 0))
    ]


@dataclasses.dataclass
class SystemdSockets:
    """Sockets systemd passed to the arbiter, by name; what was wrong with the others."""

    sockets: dict[str, socket.socket] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def take(cls, environ: MutableMapping[str, str] | None = None) -> SystemdSockets:
        """Read LISTEN_* and remove them from the environment (no child may inherit them).

        Call before anything opens a file: the fds are 3 and up. Each becomes close-on-exec.
        Logging may not be set up yet, so problems are kept in `warnings` for later.
        """
        env = os.environ if environ is None else environ
        passed = parse_listen_env(env, os.getpid())
        for variable in LISTEN_VARIABLES:
            env.pop(variable, None)
        found = cls()
        for fd, name in passed:
            try:
                os.set_inheritable(fd, False)
                sock = socket.socket(fileno=fd)
            except OSError as exc:
                found.warnings.append(
                    f"systemd passed fd {fd} ({name}), which is not a socket "
                    f"({exc.strerror or exc}): ignored"
                )
                continue
            if name in found.sockets:
                found.warnings.append(
                    f"systemd passed two sockets named {name!r} (fds "
                    f"{found.sockets[name].fileno()} and {fd}): only the first is used"
                )
                sock.close()
                continue
            found.sockets[name] = sock
        return found


# -- binding -------------------------------------------------------------------------------------


@dataclasses.dataclass
class ListeningSocket:
    """One `[socket:NAME]` as the arbiter holds it."""

    config: SocketConfig
    sock: socket.socket
    adopted: bool = False
    # (st_dev, st_ino) of the AF_UNIX file we created: we remove it at the end if still ours.
    file_id: tuple[int, int] | None = None

    @property
    def per_process(self) -> bool:
        """so_reuseport: every process gets its own socket on the address (Circus's semantics);
        ours is bound but not listening, so that it keeps the address and gets no connection."""
        return (
            self.config.so_reuseport
            and not self.adopted
            and self.sock.family != socket.AF_UNIX
            and self.sock.type in _CONNECTED_KINDS
        )

    def address(self) -> dict[str, Any]:
        """`host` and `port`, or `path`, as listsockets shows them."""
        if self.sock.family == socket.AF_UNIX:
            name = self.sock.getsockname()
            path = self.config.path if not self.adopted and self.config.path else name
            return {"path": os.fsdecode(path) if path else ""}
        host, port = self.sock.getsockname()[:2]
        return {"host": host, "port": port}

    def describe(self) -> dict[str, Any]:
        queue = accept_queue(self.sock)
        return {
            "fd": self.sock.fileno(),
            "name": self.config.name,
            "backlog": queue[1] if queue is not None else self.config.backlog,
            **self.address(),
            "family": socket.AddressFamily(self.sock.family).name,
            "type": socket.SocketKind(self.sock.type).name,
            "systemd": self.adopted,
        }


def accept_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(connections waiting to be accepted, backlog) of a listening TCP socket, else None."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return None
    # struct tcp_info: u8 tcpi_state (10 = LISTEN), ...; for a listener tcpi_unacked (offset 24)
    # is the accept queue's length and tcpi_sacked (28) its limit.
    if len(info) < 32 or info[0] != 10:
        return None
    queued, backlog = struct.unpack_from("=II", info, 24)
    return queued, backlog


def _describe_address(config: SocketConfig) -> str:
    if config.path is not None:
        return config.path
    host = config.host or "*"
    return f"[{host}]:{config.port}" if ":" in host else f"{host}:{config.port}"


def _bind_inet(
    config: SocketConfig, address: Any = None, listen: bool = True
) -> socket.socket:
    """A TCP/UDP socket bound to the section's address (or `address`), listening if `listen`."""
    family: int
    kind: int
    if address is None:
        host = None if config.host in ("", "*") else config.host
        try:
            family, kind, proto, _name, address = socket.getaddrinfo(
                host, config.port, config.address_family, config.kind, config.proto,
                socket.AI_PASSIVE,
            )[0]
        except socket.gaierror as exc:
            raise OSError(exc.errno, f"cannot resolve {config.host!r}: {exc.strerror}") from None
    else:
        family, kind, proto = config.address_family, config.kind, config.proto
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if config.so_reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if config.interface:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_BINDTODEVICE, config.interface.encode() + b"\0"
            )
        sock.bind(address)
        if listen and kind in _CONNECTED_KINDS:
            sock.listen(config.backlog)
        sock.setblocking(config.blocking)
    except BaseException:
        sock.close()
        raise
    return sock


def _in_use(path: str, kind: int) -> bool:
    """Whether a process listens on the AF_UNIX socket at `path` (a stale one refuses)."""
    probe = socket.socket(socket.AF_UNIX, kind)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return True  # e.g. EACCES: someone else's; do not take it
    finally:
        probe.close()
    return True


def _check_unix_path(config: SocketConfig, path: str) -> None:
    """Whether we may put our socket at `path`: free, `replace`, or a stale socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if config.replace:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket (set replace = true to replace it)")
    if _in_use(path, config.kind):
        raise OSError(f"{path} is in use: another process listens on it")
    log.info("[socket:%s] replacing the stale socket file %s", config.name, path)


def _bind_unix(config: SocketConfig) -> tuple[socket.socket, tuple[int, int]]:
    """An AF_UNIX socket at `path`, mode 0777 & ~umask, listening; with the file's identity.

    The process umask is not touched (other threads create files): Linux creates the file with
    the socket's own mode masked by the umask, so the socket gets its mode before bind() (the
    file is never more open than asked), and a chmod after bind() opens it as far as asked.
    """
    assert config.path is not None
    path = os.path.abspath(config.path)
    _check_unix_path(config, path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    mode = 0o777 & ~(config.umask or 0)
    sock = socket.socket(socket.AF_UNIX, config.kind, config.proto)
    try:
        os.fchmod(sock.fileno(), mode)
        sock.bind(path)
        os.chmod(path, mode)
        info = os.stat(path)
        if config.kind in _CONNECTED_KINDS:
            sock.listen(config.backlog)
        sock.setblocking(config.blocking)
    except BaseException:
        sock.close()
        raise
    return sock, (info.st_dev, info.st_ino)


def bind(config: SocketConfig) -> ListeningSocket:
    """Bind (and listen on) the socket a section describes; SocketError says why not."""
    try:
        if config.address_family == socket.AF_UNIX:
            sock, file_id = _bind_unix(config)
            return ListeningSocket(config, sock, file_id=file_id)
        per_process = config.so_reuseport and config.kind in _CONNECTED_KINDS
        return ListeningSocket(config, _bind_inet(config, listen=not per_process))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SocketError(
            config.name, f"cannot bind {_describe_address(config)}: {reason}"
        ) from None


def adopt(config: SocketConfig, sock: socket.socket) -> ListeningSocket:
    """Take a socket systemd bound for us. Its address and backlog are the .socket unit's;
    the section gives only its name and `blocking`."""
    if sock.type != config.kind:
        log.warning(
            "[socket:%s] systemd passed a %s socket, the section says %s",
            config.name,
            socket.SocketKind(sock.type).name,
            socket.SocketKind(config.kind).name,
        )
    sock.setblocking(config.blocking)
    adopted = ListeningSocket(config, sock, adopted=True)
    where = adopted.address()
    log.info(
        "[socket:%s] adopted from systemd: fd %d, %s",
        config.name,
        sock.fileno(),
        where.get("path") or f"{where.get('host')}:{where.get('port')}",
    )
    return adopted


def close(listening: ListeningSocket) -> None:
    """Close a socket we bound, and remove its AF_UNIX file if it is still ours."""
    path = listening.config.path
    listening.sock.close()
    if listening.file_id is None or path is None:
        return
    with contextlib.suppress(OSError):
        info = os.lstat(path)
        if (info.st_dev, info.st_ino) == listening.file_id:
            os.unlink(path)


# -- the arbiter's set of sockets ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SocketChanges:
    """What a reload does to the open sockets, by name (added ones are opened first)."""

    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


# A socket carried across a re-execution: its fd, whether systemd passed it, its file's id.
CarriedSocket = tuple[int, bool, "tuple[int, int] | None"]


class ListeningSockets:
    """Every `[socket:NAME]` of the running configuration, bound or adopted, by name."""

    def __init__(self, inherited: Mapping[str, socket.socket] | None = None) -> None:
        # Sockets from systemd no section uses (yet): a reload may add the section.
        self._inherited: dict[str, socket.socket] = dict(inherited or {})
        self._open: dict[str, ListeningSocket] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._open

    def take_inherited(self, name: str) -> socket.socket | None:
        """A socket systemd passed under `name`, for someone else than a [socket:NAME] section
        (a `systemd:NAME` control endpoint); None if there is none."""
        return self._inherited.pop(name, None)

    def names(self) -> list[str]:
        return list(self._open)

    def get(self, name: str) -> ListeningSocket | None:
        return self._open.get(name)

    def open_all(self, configs: Iterable[SocketConfig]) -> None:
        """Start-up: bind or adopt every section, or none (SocketError names the first failure)."""
        try:
            for config in configs:
                self._open[config.name] = self._make(config)
        except SocketError:
            self.close_all()
            raise
        for name, sock in self._inherited.items():
            log.warning(
                "systemd passed a socket named %r (fd %d) that no [socket:%s] section uses",
                name,
                sock.fileno(),
                name,
            )

    def _make(self, config: SocketConfig) -> ListeningSocket:
        inherited = self._inherited.pop(config.name, None)
        if inherited is not None:
            return adopt(config, inherited)
        return bind(config)

    def changes(self, configs: Iterable[SocketConfig]) -> SocketChanges:
        """Compare with a new configuration. A socket from systemd keeps its address (the .socket
        unit's): its section changing only updates `blocking`, it is never rebound."""
        fresh = {c.name: c for c in configs}
        changed = []
        for name, current in self._open.items():
            new = fresh.get(name)
            if new is None or new == current.config:
                continue
            if current.adopted:
                current.sock.setblocking(new.blocking)
                current.config = new
                continue
            changed.append(name)
        return SocketChanges(
            changed=tuple(changed),
            removed=tuple(n for n in self._open if n not in fresh),
        )

    def open_added(self, configs: Iterable[SocketConfig]) -> list[str]:
        """Bind the sections not open yet: all or none. The names opened."""
        opened: list[str] = []
        try:
            for config in configs:
                if config.name not in self._open:
                    self._open[config.name] = self._make(config)
                    opened.append(config.name)
        except SocketError:
            for name in opened:
                self.close(name)
            raise
        return opened

    def rebind(self, config: SocketConfig) -> None:
        """Close a socket and bind it as `config` says; if that fails, the old one comes back."""
        old = self._open.pop(config.name)
        close(old)
        try:
            self._open[config.name] = bind(config)
        except SocketError:
            with contextlib.suppress(SocketError):
                self._open[config.name] = bind(old.config)
            raise

    def close(self, name: str) -> None:
        listening = self._open.pop(name, None)
        if listening is None:
            return
        if listening.adopted:
            self._inherited[name] = listening.sock  # systemd's: kept for a section to come
        else:
            close(listening)

    # -- re-execution ----------------------------------------------------------------------------

    def carry(self) -> tuple[dict[str, CarriedSocket], dict[str, int]]:
        """The open sockets (fd, from systemd, file id) and systemd's unused ones, by name,
        their fds left open across execve."""
        carried = {}
        for name, listening in self._open.items():
            listening.sock.set_inheritable(True)
            carried[name] = (listening.sock.fileno(), listening.adopted, listening.file_id)
        unused = {}
        for name, sock in self._inherited.items():
            sock.set_inheritable(True)
            unused[name] = sock.fileno()
        return carried, unused

    def adopt_carried(
        self,
        configs: Iterable[SocketConfig],
        carried: Mapping[str, CarriedSocket],
        unused: Mapping[str, int],
    ) -> None:
        """Hold the sockets a previous program of this arbiter held, as it held them."""
        for config in configs:
            if config.name not in carried:
                continue
            fd, adopted, file_id = carried[config.name]
            sock = socket.socket(fileno=fd)
            sock.set_inheritable(False)
            self._open[config.name] = ListeningSocket(config, sock, adopted, file_id)
        for name, fd in unused.items():
            sock = socket.socket(fileno=fd)
            sock.set_inheritable(False)
            self._inherited[name] = sock

    def close_all(self) -> None:
        for name in list(self._open):
            self.close(name)
        for sock in self._inherited.values():
            sock.close()
        self._inherited.clear()

    def for_process(self, names: Sequence[str]) -> tuple[list[int], list[socket.socket]]:
        """The fds to pass to one new process, in the order of `names`, and the sockets made for
        it alone (so_reuseport), which the caller closes once the spawn request is sent."""
        fds: list[int] = []
        made: dict[str, socket.socket] = {}
        try:
            for name in names:
                listening = self._open.get(name)
                if listening is None:
                    raise SocketError(name, "is not open (see the error logged for it)")
                if not listening.per_process:
                    fds.append(listening.sock.fileno())
                    continue
                if name not in made:
                    try:
                        made[name] = _bind_inet(
                            listening.config, address=listening.sock.getsockname()
                        )
                    except OSError as exc:
                        raise SocketError(
                            name, f"cannot bind a socket for the process: {exc.strerror or exc}"
                        ) from None
                fds.append(made[name].fileno())
        except SocketError:
            for sock in made.values():
                sock.close()
            raise
        return fds, list(made.values())

    def describe(self) -> list[dict[str, Any]]:
        """Circus's listsockets entries (fd, name, backlog, host and port or path), by fd."""
        return sorted((s.describe() for s in self._open.values()), key=lambda d: d["fd"])

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per socket: its address and, for TCP listeners, the accept queue's length."""
        found: dict[str, dict[str, Any]] = {}
        for name, listening in self._open.items():
            entry = listening.describe()
            queue = accept_queue(listening.sock)
            if queue is not None:
                entry["queued"] = queue[0]
            found[name] = entry
        return found
