"""A thread that sees every connection libzmq accepts on our sockets and enforces the bounds.

libzmq offers no hook before accept(), nor a bound on connections; it reports each accepted
connection (with its descriptor) and each end on a monitor socket. This thread reads those
reports as they come, not the event loop, which may be busy for a while: it asks the peer's
credentials (SO_PEERCRED), keeps the count (connection_bounds.ConnectionLedger), shuts down a
connection over a bound (libzmq then sees it end and closes it; the client sees the connection
closed), and opens or closes the door of the ipc socket files (connection_bounds.Door).

A client may send a request before this thread got to its connection: the control server asks
`admitted` about each request's connection (its descriptor, ZMQ_SRCFD), which decides at once
if the thread has not yet, so that a refused connection is never served.

A descriptor number libzmq reported may be another file by the time it is looked at (libzmq
closed the connection, the number was reused: a child's notify socket, another endpoint's
connection). Nothing is ever shut down unless the descriptor is, through one duplicate that
keeps it from changing under us, a connected stream socket of the watched listener's address
(`_Listener`), the very connection the ledger recorded (its identity), from the user it was
recorded for.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Hashable
from typing import Any

import zmq

from circus_sd.control.connection_bounds import ConnectionLedger, Door, Refusal, door_margin
from circus_sd.fd_reserve import nofile_limit
from circus_sd.signal_mask import handled_signals_blocked

log = logging.getLogger("circus_sd.control")

MONITORED = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
_EVENT = struct.Struct("=Hi")  # libzmq's monitor frame: event, value (here a descriptor)
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# A refusal is logged at once, then summed up at most this often per user and reason.
LOG_EVERY = 10.0
# Events read from one monitor socket before the others get a turn.
BATCH = 256
# Without the kernel's O(1) count (Linux < 6.2), /proc/self/fd is listed at most this often.
RECOUNT_SECONDS = 0.05
# While the door is closed for lack of descriptors, they are counted again this often: what
# frees them (processes exiting) sends no report.
CLOSED_RECHECK_MS = 1000
# At most this often, the ledger is checked for connections whose end was missed before one is
# refused for max_connections (a stat() per connection held).
PRUNE_EVERY = 1.0
# After a failure of the thread (a bug): a pause before it goes on, doubled at each failure in
# a row (one more within FAILURE_MEMORY seconds), up to the maximum.
FAILURE_PAUSE = (0.1, 5.0)
FAILURE_MEMORY = 60.0


class _Peer:
    """One accepted connection, through a duplicate of libzmq's descriptor (so that it stays
    the same connection while we look at it, even if libzmq closes its own meanwhile)."""

    def __init__(self, sock: socket.socket, identity: int) -> None:
        self.sock = sock
        self.identity = identity

    @classmethod
    def open(cls, fd: int) -> _Peer | None:
        try:
            copy = os.dup(fd)
        except OSError:  # gone already (EBADF), or no descriptor left for the copy
            return None
        try:
            info = os.fstat(copy)
            if not stat.S_ISSOCK(info.st_mode):
                raise OSError("not a socket")  # the connection ended, its number was reused
            return cls(socket.socket(fileno=copy), info.st_ino)
        except OSError:
            os.close(copy)
            return None

    def of(self, listener: _Listener | None) -> bool:
        """Whether this is a connection accepted by `listener` (not any other socket or file
        that took the number since)."""
        if listener is None:
            return False
        try:
            # (The listener itself has that address too, but it stays open under its number.)
            return (
                self.sock.type == socket.SOCK_STREAM
                and listener.address == _address_of(self.sock)
            )
        except OSError:
            return False

    def uid(self) -> int | None:
        """The peer's uid (unix sockets), None for a tcp peer (no credentials)."""
        if self.sock.family != socket.AF_UNIX:
            return None
        try:
            _pid, uid, _gid = _UCRED.unpack(
                self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            )
        except OSError:
            return None
        return int(uid)

    def shut(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


class _Listener:
    """The address a watched socket listens on, as its accepted connections show it
    (getsockname): ("ipc", path) or ("tcp", port)."""

    def __init__(self, endpoint: str) -> None:
        self.address: tuple[str, str | int] | None = None
        scheme, _, rest = endpoint.partition("://")
        if scheme == "ipc" and rest:
            self.address = ("ipc", rest)
        elif scheme == "tcp":
            port = rest.rpartition(":")[2]
            if port.isdigit():
                self.address = ("tcp", int(port))


def _address_of(sock: socket.socket) -> tuple[str, str | int] | None:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        if isinstance(name, bytes):  # abstract namespace: b"\0name"
            name = "@" + name[1:].decode(errors="replace")
        return ("ipc", name) if name else None
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return ("tcp", int(name[1]))
    return None


class _DoorFile:
    """An ipc socket file whose permissions the door changes: held by an O_PATH descriptor,
    so that a file later put in its place is never the one changed."""

    def __init__(self, path: str, own_uid: int) -> None:
        self.path = path
        self.fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        info = os.fstat(self.fd)
        if not stat.S_ISSOCK(info.st_mode):
            os.close(self.fd)
            raise OSError(f"{path}: not a socket")
        self.open_mode = stat.S_IMODE(info.st_mode)
        # Closed: the owner only, if that is us; else nobody (root passes either way).
        self.closed_mode = self.open_mode & 0o700 if info.st_uid == own_uid else 0

    def set(self, opened: bool) -> None:
        with contextlib.suppress(OSError):  # removed at shutdown
            os.chmod(f"/proc/self/fd/{self.fd}", self.open_mode if opened else self.closed_mode)

    def close(self) -> None:
        os.close(self.fd)


class _DescriptorCount:
    """Descriptors this process has open: the kernel's O(1) count, else a listing of
    /proc/self/fd at most every RECOUNT_SECONDS, plus the connections accepted since."""

    def __init__(self) -> None:
        self._counted = 0
        self._counted_at = -math.inf
        self._since = 0

    def now(self) -> int:
        size = os.stat("/proc/self/fd").st_size
        if size > 0:
            return size
        now = time.monotonic()
        if now - self._counted_at >= RECOUNT_SECONDS:
            self._counted, self._counted_at, self._since = len(os.listdir("/proc/self/fd")), now, 0
        return self._counted + self._since

    def changed(self, delta: int) -> None:
        self._since += delta


class ConnectionGuard:
    """Watches the sockets given to `watch` (before they are bound) from its own thread."""

    def __init__(self, context: zmq.Context[Any], per_user: int, total: int) -> None:
        self._context = context
        self._own_uid = os.geteuid()
        # Root and the arbiter's own user: never refused, never counted.
        self.admins = frozenset({0, self._own_uid})
        self._ledger = ConnectionLedger(per_user, total)
        self._door = Door()
        self._doors: list[_DoorFile] = []
        # (watched socket, the PAIR socket its monitor reports to); the PAIRs are the thread's.
        self._monitored: list[tuple[Any, zmq.Socket[bytes]]] = []
        # What each watched socket listens on (by index), known once bound (see start).
        self._listeners: list[_Listener | None] = []
        self._count = _DescriptorCount()
        # Every connection decided on, admins' too: (socket, fd) -> (its identity, admitted).
        self._decided: dict[tuple[int, int], tuple[int, bool]] = {}
        self._lock = threading.Lock()  # ledger and decisions: the thread and the loop's calls
        self._thread: threading.Thread | None = None
        self._wake_read, self._wake_write = os.pipe()
        self._refused: dict[tuple[int | None, Refusal], int] = {}
        self._logged_at: dict[tuple[int | None, Refusal], float] = {}
        self._door_logged_at = -math.inf
        self._door_close_logged = False  # so that its reopening is logged too
        self._pruned_at = -math.inf

    def watch(self, zmq_socket: Any) -> int:
        """Report `zmq_socket`'s connections to the guard; call before binding it. Its index,
        for `admitted`."""
        index = len(self._monitored)
        address = f"inproc://circus-sd-connections-{id(self):x}-{index}"
        zmq_socket.monitor(address, MONITORED)
        pair: zmq.Socket[bytes] = self._context.socket(zmq.PAIR)
        pair.linger = 0
        pair.rcvhwm = 0  # never drop a report: a lost "accepted" is a connection never counted
        pair.connect(address)
        self._monitored.append((zmq_socket, pair))
        return index

    def add_door(self, path: str) -> None:
        """An ipc socket file (bound, its mode and owner final) to close in an emergency."""
        self._doors.append(_DoorFile(path, self._own_uid))

    def start(self) -> None:
        """Start the thread; call once every watched socket is bound."""
        self._listeners = [
            _Listener(zmq_socket.getsockopt(zmq.LAST_ENDPOINT).decode())
            for zmq_socket, _ in self._monitored
        ]
        self._thread = threading.Thread(target=self._run, name="circus-sd-connections", daemon=True)
        with handled_signals_blocked():
            self._thread.start()

    def stop(self) -> None:
        """Stop the monitors, end the thread, reopen the door (systemd's socket files stay)."""
        # The monitors first, while the thread still reads their events: ZMQ's I/O thread
        # sends each event with a lock held and blocks while the event pipe is full, and
        # disable_monitor waits for that lock (a re-execution after many connections hung).
        for zmq_socket, _ in self._monitored:
            with contextlib.suppress(zmq.ZMQError):
                zmq_socket.disable_monitor()
        if self._thread is not None:
            os.write(self._wake_write, b"x")
            self._thread.join()
            self._thread = None
        else:
            for _, pair in self._monitored:
                pair.close(linger=0)
        self._monitored.clear()
        for door in self._doors:
            if not self._door.open:
                door.set(True)
            door.close()
        self._doors.clear()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def admitted(self, index: int, fd: int) -> bool:
        """Whether a message that came on connection `fd` of socket `index` may be served."""
        key = (index, fd)
        with self._lock:
            known = self._decided.get(key)
        if known is not None and _identity(fd) == known[0]:
            return known[1]
        return self._decide(key)

    def kick(self, uid: int | None, zmq_socket: Any) -> int:
        """Shut down `uid`'s connections to `zmq_socket` (never an admin's); how many."""
        if uid in self.admins:
            return 0
        index = next((i for i, (s, _) in enumerate(self._monitored) if s is zmq_socket), None)
        if index is None:
            return 0
        with self._lock:
            held = [(k, ident) for k, ident in self._ledger.held(uid) if _index(k) == index]
        kicked = 0
        for key, recorded in held:
            peer = _Peer.open(_fd(key))
            if peer is None:
                continue
            try:
                # The duplicate is the check's subject and the shutdown's: nothing can change
                # between them. Not the connection recorded (libzmq closed it, the number was
                # reused): left alone, its end reported or pruned in due course.
                if (
                    peer.identity == recorded
                    and peer.of(self._listener(index))
                    and peer.uid() == uid
                ):
                    peer.shut()
                    kicked += 1
            finally:
                peer.close()
        return kicked

    def _listener(self, index: int) -> _Listener | None:
        return self._listeners[index] if index < len(self._listeners) else None

    # -- the thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        """Until stop. A failure (a bug) must not go unnoticed, nor take the arbiter down, nor
        end the thread: without it, nobody reopens a closed door and ends missed stay counted,
        which would shut every other user out for good. So it is logged as critical and, after
        a pause (no busy loop on a failure that repeats), the thread goes on: the ledger is
        pruned of the connections that ended meanwhile (their reports may be lost) and the door
        checked again. The monitors' reports wait in their PAIR sockets meanwhile (no HWM)."""
        poller = zmq.Poller()
        for _, pair in self._monitored:
            poller.register(pair, zmq.POLLIN)
        poller.register(self._wake_read, zmq.POLLIN)
        failures, failed_at, recovering = 0, -math.inf, False
        try:
            while True:
                try:
                    if recovering:
                        with self._lock:
                            self._ledger.prune(self._still_open)
                        self._check_door()
                        recovering = False
                    ready = dict(poller.poll(CLOSED_RECHECK_MS if self._door.short else None))
                    if self._wake_read in ready:
                        return
                    for index, (_, pair) in enumerate(self._monitored):
                        if pair in ready:
                            self._read(index, pair)
                    if not ready:
                        self._check_door()
                except Exception:
                    now = time.monotonic()
                    failures = failures + 1 if now - failed_at < FAILURE_MEMORY else 1
                    failed_at, recovering = now, True
                    pause = min(FAILURE_PAUSE[0] * 2 ** (failures - 1), FAILURE_PAUSE[1])
                    log.critical(
                        "the connection guard failed (%d time(s) in a row); it goes on in "
                        "%.1f s", failures, pause, exc_info=True,
                    )
                    # poll, not select: a descriptor above FD_SETSIZE is possible here.
                    waking = select.poll()
                    waking.register(self._wake_read, select.POLLIN)
                    if waking.poll(pause * 1000):
                        return
        finally:
            for _, pair in self._monitored:
                pair.close(linger=0)

    def _read(self, index: int, pair: zmq.Socket[bytes]) -> None:
        for _ in range(BATCH):
            try:
                frames = pair.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2 or len(frames[0]) != _EVENT.size:
                continue
            event, fd = _EVENT.unpack(frames[0])
            if event == zmq.EVENT_ACCEPTED:
                self._count.changed(1)
                # First the door: a flood is stopped in the kernel before anything else.
                self._check_door()
                self._decide((index, fd))
            elif event == zmq.EVENT_DISCONNECTED:
                self._count.changed(-1)
                with self._lock:
                    self._decided.pop((index, fd), None)
                    self._ledger.forget((index, fd))
                self._check_door()

    def _decide(self, key: tuple[int, int]) -> bool:
        """Admit or refuse the connection under `key`, unless already done; whether admitted."""
        peer = _Peer.open(key[1])
        if peer is None:
            return False  # gone already
        try:
            if not peer.of(self._listener(key[0])):
                # Not a connection to this socket: the one reported ended and its number was
                # reused (a child's notify socket, another endpoint's connection...). Never
                # touched, never served (what came on the connection reported is from a
                # client gone).
                return False
            with self._lock:
                known = self._decided.get(key)
                if known is not None and known[0] == peer.identity:
                    return known[1]
                uid = peer.uid()
                refusal = None
                if uid not in self.admins:
                    now = time.monotonic()
                    prune_all = (
                        self._ledger.count >= self._ledger.total
                        and now - self._pruned_at >= PRUNE_EVERY
                    )
                    if prune_all:
                        self._pruned_at = now
                    refusal = self._ledger.admit(
                        key, uid, peer.identity, self._door.short, self._still_open, prune_all
                    )
                self._decided[key] = (peer.identity, refusal is None)
                if refusal is not None:
                    self._note(uid, refusal)
            if refusal is not None:
                peer.shut()
            return refusal is None
        finally:
            peer.close()

    def _still_open(self, key: Hashable, identity: int) -> bool:
        return _identity(_fd(key)) == identity

    def _check_door(self) -> None:
        limit = nofile_limit()
        in_use = self._count.now()
        with self._lock:
            change = self._door.update(in_use, limit, self._ledger.count, self._ledger.total)
        if change is None:
            return
        for door in self._doors:
            door.set(change)
        if change:
            if self._door_close_logged:
                self._door_close_logged = False
                log.info("control sockets open to all their users again (%d descriptors in use)",
                         in_use)
            return
        now = time.monotonic()
        if now - self._door_logged_at < LOG_EVERY:
            return  # flapping under a flood: said once in a while
        self._door_logged_at = now
        self._door_close_logged = True
        if self._door.short:
            log.warning(
                "control sockets closed to all but root and the arbiter's user: %d of "
                "RLIMIT_NOFILE %d descriptors in use (%d kept free)",
                in_use, limit, door_margin(limit),
            )
        else:
            log.warning(
                "control sockets closed to all but root and the arbiter's user: "
                "max_connections = %d reached", self._ledger.total,
            )

    def _note(self, uid: int | None, refusal: Refusal) -> None:
        key = (uid, refusal)
        refused = self._refused[key] = self._refused.get(key, 0) + 1
        now = time.monotonic()
        if now - self._logged_at.get(key, -math.inf) < LOG_EVERY:
            return
        self._logged_at[key] = now
        self._refused[key] = 0
        who = "a tcp peer" if uid is None else f"uid {uid}"
        if refusal is Refusal.USER:
            why = f"it holds max_connections_per_user = {self._ledger.per_user} already"
        elif refusal is Refusal.TOTAL:
            why = f"max_connections = {self._ledger.total} reached"
        else:
            why = "too few descriptors left"
        log.warning(
            "refused %d connection(s) from %s%s: %s",
            refused, who, "" if refused == 1 else f" in the last {LOG_EVERY:g} s", why,
        )


def _identity(fd: int) -> int | None:
    """The inode of the socket descriptor `fd` refers to now (None: closed)."""
    try:
        return os.stat(f"/proc/self/fd/{fd}").st_ino
    except OSError:
        return None


def _index(key: Hashable) -> int:
    assert isinstance(key, tuple)
    return int(key[0])


def _fd(key: Hashable) -> int:
    assert isinstance(key, tuple)
    return int(key[1])
