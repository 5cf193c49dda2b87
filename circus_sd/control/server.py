"""The control endpoint (ZMQ ROUTER) and the events endpoint (ZMQ XPUB), secure by default."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import ipaddress
import json
import logging
import os
import pwd
import socket
import stat
import traceback
import urllib.parse
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from circus_sd import safe_paths
from circus_sd.arbiter import Arbiter
from circus_sd.config.model import ArbiterConfig
from circus_sd.config.options import decimal_integer
from circus_sd.control.connection_guard import ConnectionGuard
from circus_sd.control.event_pub import EventPublisher
from circus_sd.control.handlers import HANDLERS, Deferred
from circus_sd.control.output_pub import OutputPublisher
from circus_sd.control.param_checks import check_properties
from circus_sd.control.protocol import (
    CommandError,
    Errno,
    Request,
    RequestError,
    encode,
    error_reply,
    ok_reply,
    parse_request,
)
from circus_sd.control.registry import COMMANDS, Tier
from circus_sd.control.replies import SEND_HWM, PendingReplies, Sent
from circus_sd.control.subscriptions import peer_credentials as _peer_credentials
from circus_sd.curve import make_server
from circus_sd.endpoints import (
    default_endpoint,
    default_output_endpoint,
    default_pubsub_endpoint,
    ipc_path,
)

if TYPE_CHECKING:
    from zmq.auth.asyncio import AsyncioAuthenticator

log = logging.getLogger("circus_sd.control")

# Pending connections a listener queues (libzmq's default is 100).
LISTEN_BACKLOG = 32
# Requests read in one go before the loop gets a turn.
MAX_PER_PASS = 64
# Requests queued in libzmq per connection (the rest wait in the kernel): with [circus]
# max_message_size, bounds what a client that sends faster than we answer makes us hold.
RECEIVE_HWM = 4
# Events queued per subscriber (a few hundred bytes each) before it misses some.
EVENTS_SEND_HWM = 1000

SYSTEMD_PREFIX = "systemd:"


class EndpointVerdict(enum.Enum):
    """What an endpoint's transport and address mean for access control."""

    PRIVATE = "ipc socket: file permissions and peer credentials"
    ABSTRACT = "abstract ipc socket (systemd's): no file, no permissions"
    CURVE = "tcp with CURVE: only authorized keys"
    OPEN_LOCALLY = "loopback tcp without keys: any local user (warned)"
    OPEN_TO_NETWORK = "network tcp without keys, explicitly accepted (warned)"
    REFUSED = "network tcp without keys"
    UNSUPPORTED = "neither ipc nor tcp"


def endpoint_verdict(endpoint: str, curve: bool, insecure_tcp: bool) -> EndpointVerdict:
    scheme = endpoint.partition("://")[0]
    if scheme == "ipc":
        if endpoint.startswith("ipc://@"):
            return EndpointVerdict.ABSTRACT
        return EndpointVerdict.PRIVATE
    if scheme != "tcp":
        return EndpointVerdict.UNSUPPORTED
    if curve:
        return EndpointVerdict.CURVE
    if _is_loopback(urllib.parse.urlsplit(endpoint).hostname or ""):
        return EndpointVerdict.OPEN_LOCALLY
    return EndpointVerdict.OPEN_TO_NETWORK if insecure_tcp else EndpointVerdict.REFUSED


class EndpointError(Exception):
    """An endpoint that cannot or must not be used; the arbiter does not start."""

    def __init__(self, message: str, in_use: bool = False) -> None:
        super().__init__(message)
        # In use by another arbiter (a runtime conflict), rather than a configuration mistake.
        self.in_use = in_use


class ControlServer:
    """Serves Circus's JSON commands; checks each request's sender against its access tier."""

    def __init__(self, arbiter: Arbiter, options: ArbiterConfig) -> None:
        self.arbiter = arbiter
        self.endpoint = options.endpoint or default_endpoint()
        self.pubsub_endpoint = options.pubsub_endpoint or default_pubsub_endpoint()
        # As configured: None (beside the control socket), `off`, or an endpoint. Resolved in
        # bind, once the control socket's address is known.
        self._output_option = options.output_endpoint
        self.output_endpoint: str | None = None
        self.group = options.endpoint_group
        self.owner_uid = _owner_uid(options.endpoint_owner)
        self.insecure_tcp = options.insecure_tcp
        self.curve_secret_key = options.curve_secret_key
        self.curve_clients = options.curve_clients
        if bool(self.curve_secret_key) != bool(self.curve_clients):
            raise EndpointError("curve_secret_key and curve_clients go together: set both")
        self._authenticator: AsyncioAuthenticator | None = None
        self._context: zmq.asyncio.Context | None = None
        self._router: zmq.Socket[bytes] | None = None
        self._router_fd: int | None = None  # watched by the loop while serving
        self._reading = False  # in a pass of _read_requests
        self._pass_scheduled = False
        self._events: EventPublisher | None = None
        self._output: OutputPublisher | None = None
        self._max_message_size = options.max_message_size
        self._guard_bounds = (options.max_connections_per_user, options.max_connections)
        self._guard: ConnectionGuard | None = None
        self._router_index = 0  # the ROUTER's, for the guard
        self._srcfd_failed = False  # logged once
        self._pending = PendingReplies(self._send_now)
        # The ipc endpoints' lock files, by path: held while we serve, and across a
        # re-execution (held_locks), so that no other arbiter takes an endpoint meanwhile.
        self._locks: dict[str, int] = {}
        self.held_locks: dict[str, int] = {}
        # ipc socket files this server bound: the only ones it may remove when it closes.
        self._bound_paths: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # The work of commands still running (waited for or not) that a re-execution would cut
        # (handlers.Deferred.carried), by the command's name.
        self._in_flight: dict[asyncio.Future[Any], str] = {}
        self._tiers: dict[tuple[int, int], Tier | None] = {}
        self._own_uid = os.geteuid()
        # `systemd:NAME` endpoints: the listening fd systemd passed, by the address it has.
        self._adopted: dict[str, int] = {}

    # -- binding -----------------------------------------------------------------------------------

    def bind(self) -> None:
        """Bind the endpoints; call from the loop's thread, after the spawner was forked."""
        self.endpoint = self._adopt(self.endpoint)
        self.pubsub_endpoint = self._adopt(self.pubsub_endpoint)
        if self._output_option is None:
            self.output_endpoint = default_output_endpoint(self.endpoint)
        elif self._output_option.lower() != "off":
            self.output_endpoint = self._adopt(self._output_option)
        for endpoint in (self.endpoint, self.pubsub_endpoint, self.output_endpoint):
            if endpoint is not None:
                self._check_endpoint(endpoint)
        self._context = zmq.asyncio.Context()
        self._start_authenticator()
        # Plain (blocking-API) sockets on the asyncio context: non-blocking reads and sends from
        # loop callbacks (see serve); the asyncio context serves the CURVE authenticator.
        plain: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(self._context.underlying)
        # Counts and bounds the connections to every socket, from the moment they are bound.
        self._guard = guard = ConnectionGuard(plain, *self._guard_bounds)
        self._router = plain.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.MAXMSGSIZE, self._max_message_size)
        self._router.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        self._router.setsockopt(zmq.SNDHWM, SEND_HWM)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full queue says EAGAIN: replies.py
        self._secure(self._router, self.endpoint)
        self._router_index = guard.watch(self._router)
        self._bind(self._router, self.endpoint)
        self._add_door(self.endpoint)
        # XPUB rather than PUB: it tells who subscribes to what (subscriptions.py).
        pub = plain.socket(zmq.XPUB)
        self._events = EventPublisher(
            pub, EVENTS_SEND_HWM, guard.admins, lambda uid: guard.kick(uid, pub)
        )
        self._secure(pub, self.pubsub_endpoint)
        guard.watch(pub)
        self._bind(pub, self.pubsub_endpoint)
        self._add_door(self.pubsub_endpoint)
        self.arbiter.endpoints = {
            "endpoint": self.endpoint,
            "pubsub_endpoint": self.pubsub_endpoint,
        }
        self.arbiter.listeners.append(self._events.publish)
        log.info("control on %s, events on %s", self.endpoint, self.pubsub_endpoint)
        if self.output_endpoint is not None:
            xpub = plain.socket(zmq.XPUB)
            xpub.linger = 0
            self._output = OutputPublisher(xpub, guard.admins, lambda uid: guard.kick(uid, xpub))
            self._secure(xpub, self.output_endpoint)
            guard.watch(xpub)
            self._bind(xpub, self.output_endpoint)
            self._add_door(self.output_endpoint)
            self.arbiter.endpoints["output_endpoint"] = self.output_endpoint
            self.arbiter.output.taps.append(self._output.tap)
            log.info("child output on %s", self.output_endpoint)
        guard.start()

    def _add_door(self, endpoint: str) -> None:
        """Let the guard close this ipc socket file to non-admin users (connection_guard.py)."""
        path = ipc_path(endpoint)
        if self._guard is None or path is None:
            return  # tcp: no file, no door
        try:
            self._guard.add_door(path)
        except OSError as exc:
            log.warning("%s: cannot close it to other users in an emergency: %s", endpoint, exc)

    def _adopt(self, endpoint: str) -> str:
        """`systemd:NAME`: the listening socket systemd passed under that name (socket
        activation), as the ipc:// or tcp:// endpoint it is bound to. Others are as given."""
        if not endpoint.startswith(SYSTEMD_PREFIX):
            return endpoint
        name = endpoint[len(SYSTEMD_PREFIX):]
        sock = self.arbiter.sockets.take_inherited(name)
        if sock is None:
            raise EndpointError(
                f"{endpoint}: systemd passed no socket named {name!r} (FileDescriptorName= "
                "of a .socket unit whose Service= is this one)"
            )
        address = _endpoint_of(sock)
        if address is None:
            sock.close()
            raise EndpointError(f"{endpoint}: not a listening unix or TCP stream socket")
        self._adopted[address] = sock.detach()
        log.info("%s: adopted from systemd as %s", endpoint, address)
        return address

    def _start_authenticator(self) -> None:
        """ZAP handler in our loop: only clients whose public key is in curve_clients get in."""
        if not self.curve_clients or self._context is None:
            return
        if not os.path.isdir(self.curve_clients):
            raise EndpointError(f"curve_clients: {self.curve_clients} is not a directory")
        # Imported only with CURVE keys: zmq.auth is 1.5 ms of every start, and memory.
        from zmq.auth.asyncio import AsyncioAuthenticator

        self._authenticator = AsyncioAuthenticator(self._context)
        self._authenticator.start()
        self._authenticator.configure_curve(domain="*", location=self.curve_clients)

    def _secure(self, socket: Any, endpoint: str) -> None:
        if self.curve_secret_key and endpoint.startswith("tcp://"):
            try:
                make_server(socket, self.curve_secret_key)
            except (OSError, ValueError) as exc:
                raise EndpointError(f"curve_secret_key: {exc}") from None

    def _check_endpoint(self, endpoint: str) -> None:
        verdict = endpoint_verdict(endpoint, bool(self.curve_secret_key), self.insecure_tcp)
        if verdict is EndpointVerdict.REFUSED:
            raise EndpointError(
                f"{endpoint}: a control endpoint on a non-loopback address needs authentication: "
                "set curve_secret_key and curve_clients (`circus-sd --make-curve-keys DIR`), use "
                "an ipc:// or loopback endpoint, or set insecure_tcp = true to accept the risk"
            )
        if verdict is EndpointVerdict.ABSTRACT:  # configured ones are refused by --check
            raise EndpointError(
                f"{endpoint}: an abstract unix socket has no file permissions: every local "
                "user could connect to it and hold its connections; give it a path "
                "(ListenStream=/run/...)"
            )
        if verdict is EndpointVerdict.UNSUPPORTED:
            raise EndpointError(f"{endpoint}: only ipc:// and tcp:// endpoints are supported")
        if verdict is EndpointVerdict.CURVE:
            log.info("%s: CURVE authentication, clients' keys in %s", endpoint, self.curve_clients)
        elif verdict is EndpointVerdict.OPEN_LOCALLY:
            log.warning(
                "%s has no authentication: every local user can control circus-sd through it "
                "(and run programs as its user with `add`). Prefer the default ipc:// socket.",
                endpoint,
            )
        elif verdict is EndpointVerdict.OPEN_TO_NETWORK:
            log.warning("%s is open to the network WITHOUT authentication (insecure_tcp)", endpoint)

    def _bind(self, socket: Any, endpoint: str) -> None:
        # Connections queued before the guard closes the door are still accepted: a short queue
        # bounds that overshoot (connection_bounds.door_margin).
        socket.setsockopt(zmq.BACKLOG, LISTEN_BACKLOG)
        adopted = self._adopted.pop(endpoint, None)
        if adopted is not None:
            # systemd owns the socket (and its file and mode, SocketMode=): ZMQ only listens.
            socket.setsockopt(zmq.USE_FD, adopted)
            try:
                socket.bind(endpoint)
            except zmq.ZMQError as exc:
                os.close(adopted)
                raise EndpointError(f"cannot listen on {endpoint}: {exc}") from None
            return
        path = ipc_path(endpoint)
        if path is None:
            try:
                socket.bind(endpoint)
            except zmq.ZMQError as exc:
                raise EndpointError(f"cannot bind {endpoint}: {exc}", in_use=True) from None
            return
        directory = os.path.dirname(path) or "."
        self._prepare_directory(directory)
        # ZMQ would silently unlink a live socket: a lock beside it tells a second arbiter no.
        held = self.held_locks.pop(path + ".lock", None)
        if held is not None:  # ours already: the lock a previous program of ours held
            os.set_inheritable(held, False)
            lock = held
        else:
            try:  # never through a link, nor in a directory another user may change
                lock = safe_paths.open_path(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:  # safe_paths.UnsafePath too
                raise EndpointError(f"{endpoint}: lock {path}.lock: {exc}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise EndpointError(
                f"{endpoint} is in use by another circus-sd (its lock {path}.lock is held)",
                in_use=True,
            ) from None
        self._locks[path + ".lock"] = lock
        mode = 0o660 if self.group is not None or self.owner_uid is not None else 0o600
        old_umask = os.umask(0o777 & ~mode)
        try:
            socket.bind(endpoint)
        except zmq.ZMQError as exc:
            raise EndpointError(f"cannot bind {endpoint}: {exc}") from None
        finally:
            os.umask(old_umask)
        self._bound_paths.append(path)
        # The socket just made is ours, and in its directory (ours, or sticky: see
        # _prepare_directory) nobody else can rename or replace it: chmod and chown (which
        # follow a link) reach it, unless something else is found there.
        info = os.stat(path, follow_symlinks=False)
        if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
            raise EndpointError(f"{endpoint}: {path} is not the socket circus-sd just made")
        os.chmod(path, mode)
        if self.group is not None or self.owner_uid is not None:
            os.chown(
                path,
                -1 if self.owner_uid is None else self.owner_uid,
                -1 if self.group is None else self.group,
            )

    def _prepare_directory(self, directory: str) -> None:
        """Made with its final mode (whoever comes first: the notify sockets use it too);
        refused if another user owns it or may write to it (squatting), or a directory above
        is another user's or writable by every user.

        A sticky directory of root's (`ipc:///tmp/circus.sock`, as Circus users often wrote) is
        accepted as it is: there the .lock must be a file of ours with a single link, never a
        link (safe_paths.open_file), and the socket is made by bind(), which never follows a
        link, then checked to be ours; nobody else may rename or remove either in a sticky
        directory. Its own mode (0600/0660) keeps other users out."""
        shared = self.group is not None or self.owner_uid is not None
        mode = 0o750 if self.group is not None else 0o755 if shared else 0o700
        group = -1 if self.group is None else self.group
        try:
            safe_paths.ensure_directory(directory, mode, group, shared_ok=True)
        except OSError as exc:  # safe_paths.UnsafePath too
            raise EndpointError(f"socket directory: {exc}") from None

    # -- serving -----------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Answer requests until cancelled.

        The ROUTER socket is read from a reader callback on its ZMQ_FD rather than by awaiting
        zmq.asyncio's recv (a future and several loop turns per request: 40 of the 200 us of a
        round trip here). ZMQ_FD is edge-triggered: every pass reads until EAGAIN, and every reply
        sent outside a pass is followed by one (a send may consume the edge of a request).
        """
        assert self._router is not None
        loop = asyncio.get_running_loop()
        self._router_fd = self._router.FD
        loop.add_reader(self._router_fd, self._read_requests)
        self._read_requests()
        if self._events is not None:
            self._events.start()
        if self._output is not None:
            self._output.start()
        try:
            await loop.create_future()  # until cancelled
        finally:
            self._stop_reading()

    def _stop_reading(self) -> None:
        if self._router_fd is not None:
            asyncio.get_running_loop().remove_reader(self._router_fd)
            self._router_fd = None
        if self._events is not None:
            self._events.stop()
        if self._output is not None:
            self._output.stop()

    def _read_requests(self) -> None:
        """One pass: requests until EAGAIN, at most MAX_PER_PASS (the rest on a later turn, so
        that a flood of requests cannot keep exits, timers and replies waiting)."""
        self._pass_scheduled = False
        if self._router_fd is None or self._router is None:
            return
        self._reading = True
        try:
            for _ in range(MAX_PER_PASS):
                try:
                    frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.ZMQError:  # EAGAIN: all read (or the socket is closing)
                    # libzmq has just taken in its clients' news (room in their queues, among
                    # others): the time to send the replies that waited for it.
                    if self._pending:
                        self._pending.flush()
                    return
                try:
                    self._handle_frames(frames)
                except Exception:  # a bug with one request must not stall the others
                    log.exception("control request not handled")
        finally:
            self._reading = False
        self._schedule_pass()

    def _schedule_pass(self) -> None:
        if not self._pass_scheduled and self._router_fd is not None:
            self._pass_scheduled = True
            asyncio.get_running_loop().call_soon(self._read_requests)

    def _handle_frames(self, frames: list[Any]) -> None:
        identity = frames[0].bytes
        # A REQ client puts an empty delimiter before its request: answer it in its own shape.
        envelope = [identity]
        body = frames[1:]
        if len(body) == 2 and not body[0].bytes:
            envelope.append(b"")
            body = body[1:]
        if len(body) != 1:
            log.debug("dropping a %d-frame message", len(frames))
            return
        peer = _peer_credentials(body[0]) if ipc_path(self.endpoint) else None
        if not self._admitted(body[0], peer):
            return  # its connection is over a bound, shut down already (connection_guard.py)
        try:
            request = parse_request(body[0].bytes)
        except RequestError as exc:
            self._reply(envelope, error_reply(exc.request_id, exc.reason, exc.errno))
            return
        except CommandError as exc:
            self._reply(envelope, error_reply(None, exc.reason, exc.errno))
            return
        try:
            result = self._dispatch(request, peer)
        except Exception as exc:
            self._answer(envelope, request, exc)
            return
        if isinstance(result, Deferred) and not (
            request.properties.get("waiting") is True or result.always
        ):
            # Not waited for: the work goes on in the loop, the reply goes now.
            work = asyncio.ensure_future(result.work)
            work.add_done_callback(_log_failure(request.command))
            if not result.carried:
                self._track(work, request.command)
            result = None
        if isinstance(result, Deferred):
            task = asyncio.create_task(self._complete(envelope, request, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if not result.carried:
                self._track(task, request.command)
        else:
            # Most commands: answered in this very loop turn, without a task.
            self._answer(envelope, request, result)

    def _track(self, work: asyncio.Future[Any], command: str) -> None:
        self._in_flight[work] = command
        work.add_done_callback(self._in_flight.pop)

    def commands_in_flight(self) -> list[str]:
        """The commands at work that a re-execution would cut, but the caller's own."""
        current = asyncio.current_task()
        return sorted(name for work, name in self._in_flight.items() if work is not current)

    async def wait_for_commands(self, timeout: float) -> list[str]:
        """Let the commands in flight end, within `timeout`; those still running."""
        current = asyncio.current_task()
        running = [work for work in self._in_flight if work is not current]
        if running:
            await asyncio.wait(running, timeout=timeout)
        return self.commands_in_flight()

    async def _complete(self, envelope: list[bytes], request: Request, result: Deferred) -> None:
        """The reply to a waited-for command, once its work is done."""
        outcome: dict[str, Any] | Exception | None
        try:
            outcome = await result.work
        except Exception as exc:
            outcome = exc
        self._answer(envelope, request, outcome)

    def _answer(
        self, envelope: list[bytes], request: Request, outcome: dict[str, Any] | Exception | None
    ) -> None:
        """The reply to a request, from its result or from what it raised (a cast gets none)."""
        if isinstance(outcome, CommandError):
            reply = error_reply(request.id, outcome.reason, outcome.errno)
        elif isinstance(outcome, OSError):
            reply = error_reply(request.id, str(outcome), Errno.OS_ERROR)
        elif isinstance(outcome, Exception):  # a bug in one command must not stop the server
            log.error("command %s failed", request.command, exc_info=outcome)
            reply = error_reply(
                request.id,
                f"{type(outcome).__name__}: {outcome}",
                Errno.COMMAND_ERROR,
                "".join(traceback.format_exception(outcome)),
            )
        else:
            reply = ok_reply(request.id, outcome)
        if not request.cast:
            self._reply(envelope, reply)

    def _admitted(self, frame: Any, peer: tuple[int, int] | None) -> bool:
        """Whether the guard lets the request's connection be served. Without the connection's
        descriptor (ZMQ_SRCFD: never seen missing on a stream transport) it cannot tell, and
        fails closed: only an admin, known by its credentials on an ipc socket, is served."""
        if self._guard is None:
            return True
        try:
            fd = frame.get(zmq.SRCFD)
        except zmq.ZMQError as exc:
            if peer is not None and peer[0] in self._guard.admins:
                return True
            if not self._srcfd_failed:
                self._srcfd_failed = True
                log.error("a request's connection is unknown (ZMQ_SRCFD: %s): requests from "
                          "users other than root and the arbiter's are refused", exc)
            return False
        return self._guard.admitted(self._router_index, fd)

    def _dispatch(
        self, request: Request, peer: tuple[int, int] | None
    ) -> dict[str, Any] | Deferred | None:
        """Check and run a request's handler: its result, or the work it left for the loop."""
        if request.command == "listen":
            raise CommandError("invalid message. use a pub/sub socket")
        command = COMMANDS.get(request.command)
        handler = HANDLERS.get(request.command)
        if command is None or handler is None:
            raise CommandError(f"unknown command: {request.command!r}", Errno.UNKNOWN_COMMAND)
        caller = self._authorize(request, command.tier, peer)
        check_properties(command, request.properties)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("command %s %s", request.command, json.dumps(request.properties, default=str))
        return handler(self.arbiter, request.properties, caller)

    def _authorize(self, request: Request, needed: Tier, peer: tuple[int, int] | None) -> Tier:
        """The caller's tier, if it is enough for the command; the handler checks what depends
        on the request's content (the options of `set`) against it."""
        if peer is None:
            if ipc_path(self.endpoint) is not None:
                # ipc, yet libzmq gave no credentials (or none that parse): nobody to trust.
                raise CommandError(
                    "access denied: the peer's credentials are unknown", Errno.ACCESS_DENIED
                )
            return Tier.ADMIN  # tcp: no credentials exist; refused at start-up unless loopback
        tier = self._tier_of(*peer)
        if tier is None:
            raise CommandError(
                f"access denied: uid {peer[0]} may not use this circus-sd "
                "(not root, not its user, not in its endpoint_group)",
                Errno.ACCESS_DENIED,
            )
        if tier < needed:
            raise CommandError(
                f"access denied: {request.command} changes what runs or as whom; "
                f"uid {peer[0]} may only read and drive the configured watchers",
                Errno.ACCESS_DENIED,
            )
        return tier

    def _tier_of(self, uid: int, gid: int) -> Tier | None:
        key = (uid, gid)
        if key not in self._tiers:
            self._tiers[key] = self._compute_tier(uid, gid)
        return self._tiers[key]

    def _compute_tier(self, uid: int, gid: int) -> Tier | None:
        if uid in (0, self._own_uid):
            return Tier.ADMIN
        if uid == self.owner_uid:
            return Tier.OPERATE
        if self.group is None:
            return None
        if gid == self.group:
            return Tier.OPERATE
        try:
            name = pwd.getpwuid(uid).pw_name
            if self.group in os.getgrouplist(name, gid):
                return Tier.OPERATE
        except KeyError:
            pass
        return None

    def _reply(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        if self._router is None:
            return
        self._pending.send([*envelope, encode(reply)])
        if not self._reading:
            self._schedule_pass()  # the send may have taken the edge of a waiting request

    def _send_now(self, frames: list[bytes]) -> Sent:
        if self._router is None:
            return Sent.GONE
        try:
            self._router.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            return Sent.FULL
        except zmq.ZMQError:  # EHOSTUNREACH: the client left (or the socket is closing)
            return Sent.GONE
        return Sent.SENT

    # -- events ------------------------------------------------------------------------------------

    async def close(self, keep_locks: bool = False) -> dict[str, int]:
        """Let replies in flight (e.g. `quit --waiting`) go out, then close everything. With
        `keep_locks` (a re-execution), the endpoints' locks stay held and their files stay, for
        the next program; returned by path."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1.0)
        with contextlib.suppress(ValueError):
            if self._events is not None:
                self.arbiter.listeners.remove(self._events.publish)
        self._stop_reading()  # before its socket is closed (serve may not have ended yet)
        if self._guard is not None:  # before the sockets it watches are closed
            self._guard.stop()
            self._guard = None
        if self._output is not None:
            with contextlib.suppress(ValueError):
                self.arbiter.output.taps.remove(self._output.tap)
            self._output.close()
            self._output = None
        if self._events is not None:
            self._events.close()
            self._events = None
        if self._router is not None:
            self._router.close(linger=100)
            self._router = None
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if self._context is not None:
            self._context.term()
            self._context = None
        kept: dict[str, int] = {}
        if keep_locks:
            for path, lock in self._locks.items():
                os.set_inheritable(lock, True)
                kept[path] = lock
            self._locks.clear()
            self._bound_paths.clear()
        # Not the files of endpoints we failed to bind: they may be another arbiter's.
        for path in self._bound_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._bound_paths.clear()
        for lock in self._locks.values():
            os.close(lock)
        self._locks.clear()
        for fd in self._adopted.values():  # systemd's sockets of endpoints never bound
            os.close(fd)
        self._adopted.clear()
        return kept


def _endpoint_of(sock: socket.socket) -> str | None:
    """The ZMQ endpoint a listening stream socket is bound to (None: another kind)."""
    if sock.type != socket.SOCK_STREAM:
        return None
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        if isinstance(address, bytes):  # abstract namespace: b"\0name"
            return "ipc://@" + address[1:].decode(errors="replace")
        return "ipc://" + address if address else None
    if sock.family == socket.AF_INET:
        return f"tcp://{address[0]}:{address[1]}"
    if sock.family == socket.AF_INET6:
        return f"tcp://[{address[0]}]:{address[1]}"
    return None


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _owner_uid(owner: str | None) -> int | None:
    if not owner:
        return None
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        uid = decimal_integer(owner)
        if uid is not None:
            return uid
        raise EndpointError(f"endpoint_owner: no user {owner!r}") from None


def _log_failure(command: str) -> Any:
    def check(task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, CommandError):
            log.error("%s: %s", command, exc.reason)
        elif exc is not None:
            log.error("%s failed: %s", command, exc, exc_info=exc)

    return check
