"""Who holds connections to the arbiter's sockets, whether one more may stay, and the door.

Pure bookkeeping for ConnectionGuard (connection_guard.py), which feeds it what libzmq accepted
and acts on its answers. Root and the arbiter's own user ("admins") are never refused and never
counted. Everyone else is bounded per user (`max_connections_per_user`) and all together
(`max_connections`); a tcp peer has no credentials: tcp peers are bounded by the latter only
(and root cannot be told from the others on a tcp endpoint).

The door: libzmq accepts every connection the kernel queues, and aborts the whole arbiter when
accept() fails for lack of a descriptor. Refusing a connection after libzmq accepted it cannot
keep up with a flood, so the ipc socket files are closed to everyone but admins (their group and
other permission bits removed: connect() then fails in the kernel, without reaching libzmq)
while the descriptors in use come within `door_margin` of RLIMIT_NOFILE, or the non-admin
connections reach `max_connections`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Iterable

# The door never reopens closer to the limit than twice the margin (hysteresis: a flood does not
# make it flap at every connection).
REOPEN_FACTOR = 2


class Refusal(enum.Enum):
    """Why a connection is shut down right after libzmq accepted it."""

    USER = "max_connections_per_user"
    TOTAL = "max_connections"
    DESCRIPTORS = "descriptors"


def door_margin(limit: int) -> int:
    """Descriptors kept out of reach of non-admin connections, below the soft RLIMIT_NOFILE.

    It must cover what libzmq accepts in the time the guard thread takes to close the door (a
    flood of eight local processes overshot by about 270 connections here while the event loop
    kept the GIL busy; the listen queue adds at most server.LISTEN_BACKLOG), and leaves room for
    root's connections: a quarter of the limit, at least 64, at most 65,536.
    """
    return max(64, min(limit // 4, 65536))


class ConnectionLedger:
    """The non-admin connections held, by key (the guard's (socket, fd)); their bounds."""

    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        # key -> (uid or None for tcp, identity of the connection: its socket's inode)
        self._held: dict[Hashable, tuple[int | None, int]] = {}
        self._by_user: dict[int | None, set[Hashable]] = {}

    @property
    def count(self) -> int:
        """Non-admin connections held."""
        return len(self._held)

    def held_by(self, uid: int | None) -> int:
        return len(self._by_user.get(uid, ()))

    def admit(
        self,
        key: Hashable,
        uid: int | None,
        identity: int,
        descriptors_short: bool = False,
        still_open: Callable[[Hashable, int], bool] | None = None,
        prune_all: bool = True,
    ) -> Refusal | None:
        """Record a non-admin connection libzmq accepted, or say why it must be shut down.

        `descriptors_short`: the descriptors in use are within the door's margin of the limit.
        `still_open(key, identity)`: whether a recorded connection is still there; asked about
        the user's connections before refusing one for the per-user bound, and about everyone's
        before refusing one for the total if `prune_all` (the caller bounds how often it pays
        for that), so that a connection whose end the guard missed does not count forever.
        """
        self.forget(key)  # a key seen again: its descriptor was reused
        if descriptors_short:
            return Refusal.DESCRIPTORS
        if uid is not None and self.held_by(uid) >= self.per_user and still_open is not None:
            self._prune(self._by_user.get(uid, set()), still_open)
        if uid is not None and self.held_by(uid) >= self.per_user:
            return Refusal.USER
        if self.count >= self.total and still_open is not None and prune_all:
            # The same for everyone's: ends missed (the guard's thread was down, say) must not
            # keep the total, and with it the door, closed to every other user for good.
            self._prune(self._held, still_open)
        if self.count >= self.total:
            return Refusal.TOTAL
        self._held[key] = (uid, identity)
        self._by_user.setdefault(uid, set()).add(key)
        return None

    def forget(self, key: Hashable) -> None:
        """The connection under `key` ended (or never counted)."""
        entry = self._held.pop(key, None)
        if entry is None:
            return
        keys = self._by_user[entry[0]]
        keys.discard(key)
        if not keys:
            del self._by_user[entry[0]]

    def keys_of(self, uid: int | None) -> list[Hashable]:
        return list(self._by_user.get(uid, ()))

    def held(self, uid: int | None) -> list[tuple[Hashable, int]]:
        """`uid`'s connections: (key, the identity recorded when it was admitted)."""
        return [(key, self._held[key][1]) for key in self._by_user.get(uid, ())]

    def identity(self, key: Hashable) -> int | None:
        """The identity recorded for the connection under `key` (None: not held)."""
        entry = self._held.get(key)
        return None if entry is None else entry[1]

    def prune(self, still_open: Callable[[Hashable, int], bool]) -> int:
        """Forget every connection that is no longer there; how many."""
        return self._prune(self._held, still_open)

    def _prune(self, keys: Iterable[Hashable], still_open: Callable[[Hashable, int], bool]) -> int:
        stale = [k for k in keys if not still_open(k, self._held[k][1])]
        for key in stale:
            self.forget(key)
        return len(stale)


class Door:
    """Whether the ipc socket files admit non-admin users (open) or only admins (closed)."""

    def __init__(self) -> None:
        self.open = True
        # Closed for lack of descriptors (reopened only well below the limit: no flapping).
        self.short = False

    def update(self, in_use: int, limit: int, connections: int, total: int) -> bool | None:
        """The door's new state if it must change (True: open it), else None.

        `in_use`: descriptors open; `limit`: the soft RLIMIT_NOFILE; `connections`: non-admin
        connections held, of at most `total`.
        """
        margin = door_margin(limit)
        if in_use >= limit - margin:
            self.short = True
        elif in_use <= limit - REOPEN_FACTOR * margin:
            self.short = False
        should_open = not self.short and connections < total
        if should_open == self.open:
            return None
        self.open = should_open
        return should_open
