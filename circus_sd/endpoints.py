"""Where the control and event sockets live by default: a private runtime directory."""

from __future__ import annotations

import os

CONTROL_SOCKET = "control.sock"
EVENTS_SOCKET = "events.sock"


def runtime_dir() -> str:
    """`/run/circus-sd` for root, else `$XDG_RUNTIME_DIR/circus-sd` (or /tmp/circus-sd-UID)."""
    if os.geteuid() == 0:
        return "/run/circus-sd"
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return os.path.join(base, "circus-sd")
    return f"/tmp/circus-sd-{os.geteuid()}"


def default_endpoint() -> str:
    return "ipc://" + os.path.join(runtime_dir(), CONTROL_SOCKET)


def default_pubsub_endpoint() -> str:
    return "ipc://" + os.path.join(runtime_dir(), EVENTS_SOCKET)


def ipc_path(endpoint: str) -> str | None:
    """The filesystem path of an ipc:// endpoint (None for other transports)."""
    if endpoint.startswith("ipc://"):
        return endpoint[len("ipc://"):]
    return None
