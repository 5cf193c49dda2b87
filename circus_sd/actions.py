"""What a watcher's decisions ask the arbiter to do: plain values, executed at the edges."""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from typing import Any

from circus_sd.message_ids import MessageId


@dataclasses.dataclass(frozen=True)
class Spawn:
    """Start one process for worker `wid`; the answer comes back as spawned/spawn_failed."""

    spawn_id: int
    wid: int


@dataclasses.dataclass(frozen=True)
class Signal:
    """Send `signum` to `pid`; with `tree`, to its descendants too."""

    pid: int
    signum: int
    tree: bool = False


@dataclasses.dataclass(frozen=True)
class StartTimer:
    """Call the watcher's `timer(key)` after `delay` seconds; replaces a timer of the same key."""

    key: Hashable
    delay: float


@dataclasses.dataclass(frozen=True)
class CancelTimer:
    key: Hashable


@dataclasses.dataclass(frozen=True)
class Publish:
    """An event for the bus: topic `watcher.<name>.<event>`; the arbiter adds the time."""

    event: str
    payload: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Log:
    """A decision worth telling the operator, once.

    `kind` gives the line its MESSAGE_ID; `wid` and `pid`, when it is about one process, are
    sent to journald as WID= and CHILD_PID=, as for that process's output (the arbiter adds
    WATCHER=, the name of the watcher that decided). `shared` names a cause that is the
    arbiter's, not the watcher's (a shortage, a lost spawner): every watcher meets it, and the
    arbiter warns of it once (shared_warnings.py).
    """

    level: int
    message: str
    kind: MessageId
    wid: int | None = None
    pid: int | None = None
    shared: str | None = None


@dataclasses.dataclass(frozen=True)
class CallHook:
    """Call the watcher's configured hook `hook` (Circus's `hooks.NAME`) with `kwargs`.

    With a `token`, the watcher waits for the outcome: `hook_done(token, approved)`. Without
    one, the call is only a notification (its result does not matter).
    """

    hook: str
    token: Hashable = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


Action = Spawn | Signal | StartTimer | CancelTimer | Publish | Log | CallHook
