"""Which arbiter circusctl talks to when told nothing: circus-sd's socket, else Circus's port.

A Circus user's scripts run `circusctl status` against a Circus arbiter on its default
`tcp://127.0.0.1:5555`; circus-sd's own default is a private ipc socket. Given no --endpoint and
no $CIRCUSCTL_ENDPOINT, the ipc socket is used if it exists, else Circus's port if something
listens there; otherwise the error names both.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from circus_sd import endpoints
from circus_sd.client import ENDPOINT_ENV, CallError

CIRCUS_DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
_PROBE_SECONDS = 1.0


def tcp_listening(endpoint: str) -> str | None:
    """None if an arbiter we may trust listens at a `tcp://127.0.0.1:port` endpoint, else why
    not. Any local user can listen on a free port: the listener must be root's or ours, or
    our commands (and their answers, which tail and is-active believe) would be a stranger's."""
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    owners = listener_owners(int(port))
    if not owners:
        return "nothing listens there"
    strangers = owners - {0, os.geteuid()}
    if strangers:
        return f"it is listened on by uid {min(strangers)}, neither root nor you: not trusted"
    try:
        with socket.create_connection((host, int(port)), timeout=_PROBE_SECONDS):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


# /proc/net/tcp's state of a listening socket.
_TCP_LISTEN = "0A"


def listener_owners(port: int) -> set[int]:
    """The uids of the IPv4 sockets listening on `port` on the loopback or any address."""
    owners = set()
    try:
        with open("/proc/net/tcp") as table:
            next(table, None)
            for line in table:
                fields = line.split()
                address, state, uid = fields[1], fields[3], fields[7]
                ip, _, hex_port = address.partition(":")
                if state == _TCP_LISTEN and int(hex_port, 16) == port and ip in (
                    "0100007F", "00000000"
                ):
                    owners.add(int(uid))
    except (OSError, ValueError, IndexError):
        return set()
    return owners


def choose_endpoint(given: str | None, environ: dict[str, str] | None = None,
                    probe: Callable[[str], str | None] = tcp_listening) -> str:
    """The endpoint to connect to; CallError naming every endpoint tried if none answers."""
    env = os.environ if environ is None else environ
    if given or env.get(ENDPOINT_ENV):
        return given or env[ENDPOINT_ENV]
    own = endpoints.client_default_endpoint()
    path = endpoints.ipc_path(own)
    if path is None or os.path.exists(path):
        return own
    why_not = probe(CIRCUS_DEFAULT_ENDPOINT)
    if why_not is None:
        return CIRCUS_DEFAULT_ENDPOINT
    raise CallError(
        f"no arbiter found: tried {own} (no such socket) and Circus's "
        f"{CIRCUS_DEFAULT_ENDPOINT} ({why_not.lower()}); is it running? Give --endpoint or set "
        f"${ENDPOINT_ENV}"
    )
