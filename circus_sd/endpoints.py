"""Where the control and event sockets live by default: a private runtime directory."""

from __future__ import annotations

import os

from circus_sd import safe_paths

CONTROL_SOCKET = "control.sock"
EVENTS_SOCKET = "events.sock"
# The circus-sd service's (root's) runtime directory: RuntimeDirectory=circus-sd in its unit.
SYSTEM_RUNTIME_DIR = "/run/circus-sd"


def runtime_dir() -> str:
    """`/run/circus-sd` for root, else `$XDG_RUNTIME_DIR/circus-sd` (or /tmp/circus-sd-UID)."""
    if os.geteuid() == 0:
        return SYSTEM_RUNTIME_DIR
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return os.path.join(base, "circus-sd")
    return f"/tmp/circus-sd-{os.geteuid()}"


def runtime_dir_problem(socket_path: str) -> str | None:
    """Why a socket in our own default runtime directory must not be used, or None.

    That directory must be ours: anyone may create /tmp/circus-sd-UID before us, put their own
    control.sock in it and read (and answer) what we send. The arbiter refuses to use such a
    directory (control/server.py); a client must not talk to a socket in it either."""
    directory = os.path.dirname(socket_path)
    if directory != runtime_dir() or not os.path.lexists(directory):
        return None
    problem = safe_paths.directory_problem(directory, shared_ok=False)
    if problem is None:
        return None
    return f"{problem} (or set XDG_RUNTIME_DIR to a directory of your own)"


def default_endpoint() -> str:
    return "ipc://" + os.path.join(runtime_dir(), CONTROL_SOCKET)


def client_default_endpoint() -> str:
    """The control endpoint of a client told nothing: its user's arbiter, or the system service's
    when only that one runs (the user is then, hopefully, in its endpoint_group)."""
    own = os.path.join(runtime_dir(), CONTROL_SOCKET)
    system = os.path.join(SYSTEM_RUNTIME_DIR, CONTROL_SOCKET)
    if own != system and not os.path.exists(own) and os.path.exists(system):
        return "ipc://" + system
    return "ipc://" + own


def default_pubsub_endpoint() -> str:
    return "ipc://" + os.path.join(runtime_dir(), EVENTS_SOCKET)


def default_output_endpoint(control_endpoint: str) -> str | None:
    """Beside an ipc control socket, named after it (`control.sock` -> `control-output.sock`),
    so that it is as private as the control socket and never shared by two arbiters; none for
    a tcp:// or abstract control endpoint."""
    path = ipc_path(control_endpoint)
    if path is None or path.startswith("@"):  # tcp://, or an abstract socket (no directory)
        return None
    return "ipc://" + path.removesuffix(".sock") + "-output.sock"


def output_topic(watcher: str, stream: str | None = None) -> str:
    """The topic of a watcher's output on the output socket: `output.web.stdout`; without a
    stream, the prefix of both of its streams."""
    return f"output.{watcher}.{stream or ''}"


def ipc_path(endpoint: str) -> str | None:
    """The filesystem path of an ipc:// endpoint (None for other transports)."""
    if endpoint.startswith("ipc://"):
        return endpoint[len("ipc://"):]
    return None
