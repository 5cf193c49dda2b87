"""Bounds on what other users can make the arbiter hold: connections (per user, in all), the
door near the descriptor limit, distinct subscriptions, replies a client does not read, and
the [circus] options that set them."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import socket
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from circus_sd.config.options import OptionValueError, byte_size, endpoint_address
from circus_sd.control.connection_bounds import ConnectionLedger, Door, Refusal, door_margin
from circus_sd.control.connection_guard import ConnectionGuard
from circus_sd.control.protocol import CommandError, Errno, parse_request
from circus_sd.control.registry import Tier
from circus_sd.control.replies import PendingReplies, Sent
from circus_sd.control.server import ControlServer
from circus_sd.control.subscriptions import Offender, SubscriptionBook

ADMINS = (0, 990)

# -- connections ---------------------------------------------------------------------------------


def test_each_user_is_bounded_and_everyone_together() -> None:
    ledger = ConnectionLedger(per_user=2, total=3)
    assert ledger.admit((0, 10), 1000, 1) is None
    assert ledger.admit((0, 11), 1000, 2) is None
    assert ledger.admit((0, 12), 1000, 3) is Refusal.USER
    assert ledger.admit((1, 12), 1001, 4) is None
    assert ledger.admit((2, 13), 1002, 5) is Refusal.TOTAL
    assert (ledger.count, ledger.held_by(1000), ledger.held_by(1002)) == (3, 2, 0)

    # A connection that ends makes room for its user again.
    ledger.forget((0, 10))
    assert ledger.admit((0, 14), 1000, 6) is None
    ledger.forget((9, 99))  # never counted (an admin's, or refused): nothing happens
    assert ledger.count == 3


def test_tcp_peers_have_no_user_and_are_bounded_all_together() -> None:
    ledger = ConnectionLedger(per_user=1, total=3)
    assert ledger.admit((0, 5), None, 1) is None
    assert ledger.admit((0, 6), None, 2) is None
    assert ledger.admit((0, 7), 1000, 3) is None
    assert ledger.admit((0, 8), None, 4) is Refusal.TOTAL


def test_short_of_descriptors_nobody_else_gets_in() -> None:
    ledger = ConnectionLedger(per_user=5, total=5)
    assert ledger.admit((0, 5), 1000, 1, descriptors_short=True) is Refusal.DESCRIPTORS
    assert ledger.count == 0


def test_a_reused_descriptor_is_a_new_connection_and_a_missed_end_heals() -> None:
    ledger = ConnectionLedger(per_user=2, total=10)
    ledger.admit((0, 7), 1000, 1)
    # The same socket and descriptor again: the first connection ended unseen.
    assert ledger.admit((0, 7), 1000, 2) is None
    assert ledger.held_by(1000) == 1
    ledger.admit((0, 8), 1000, 3)
    # At the bound, the user's connections are checked before one is refused.
    assert ledger.admit((0, 9), 1000, 4, still_open=lambda key, identity: identity == 2) is None
    assert ledger.keys_of(1000) and sorted(ledger.keys_of(1000)) == [(0, 7), (0, 9)]
    assert ledger.admit((0, 10), 1000, 5, still_open=lambda key, identity: True) is Refusal.USER


def test_ends_missed_do_not_hold_the_total_for_good() -> None:
    ledger = ConnectionLedger(per_user=5, total=2)
    assert ledger.admit((0, 7), 1000, 1) is None
    assert ledger.admit((0, 8), 1001, 2) is None
    # Both ended unseen (the guard's thread was down, say): another user is let in.
    gone = {1, 2}
    assert ledger.admit((0, 9), 1002, 3, still_open=lambda k, i: i not in gone) is None
    assert ledger.count == 1 and ledger.held(1002) == [((0, 9), 3)]
    assert ledger.identity((0, 9)) == 3 and ledger.identity((0, 7)) is None
    # The caller may hold that (costly) check back: refused without it.
    ledger.admit((0, 10), 1003, 4)
    assert ledger.admit((0, 11), 1004, 5, still_open=lambda k, i: False, prune_all=False) is (
        Refusal.TOTAL
    )
    assert ledger.prune(lambda k, i: i != 4) == 1 and ledger.count == 1


@pytest.mark.parametrize(
    ("limit", "margin"),
    [(64, 64), (256, 64), (512, 128), (2048, 512), (1 << 20, 65536), (1 << 30, 65536)],
)
def test_door_margin(limit: int, margin: int) -> None:
    assert door_margin(limit) == margin


def test_the_door_closes_near_the_limit_and_reopens_well_below() -> None:
    door = Door()
    margin = door_margin(2048)
    assert door.update(2048 - margin - 1, 2048, 0, 64) is None and door.open
    assert door.update(2048 - margin, 2048, 0, 64) is False and not door.open and door.short
    # Hysteresis: not reopened as soon as it is below the closing point.
    assert door.update(2048 - margin - 1, 2048, 0, 64) is None and not door.open
    assert door.update(2048 - 2 * margin, 2048, 0, 64) is True and door.open


def test_the_door_closes_while_everyone_else_holds_max_connections() -> None:
    door = Door()
    assert door.update(100, 2048, 64, 64) is False and not door.short
    assert door.update(100, 2048, 64, 64) is None
    assert door.update(100, 2048, 63, 64) is True
    # Both reasons: it opens only once neither holds.
    assert door.update(2000, 2048, 64, 64) is False
    assert door.update(100, 2048, 64, 64) is None
    assert door.update(100, 2048, 10, 64) is True


# -- the guard, on real sockets ------------------------------------------------------------------


@dataclasses.dataclass
class Guarded:
    guard: ConnectionGuard
    router: Any
    index: int
    path: Path

    def connect(self) -> socket.socket:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(self.path))
        client.settimeout(5)
        client.recv(10)  # libzmq's greeting: accepted
        return client

    def held(self) -> list[tuple[Any, int]]:
        with self.guard._lock:
            return self.guard._ledger.held(os.geteuid())


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Guarded]:
    context: zmq.Context[Any] = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.linger = 0
    guard = ConnectionGuard(context, per_user=2, total=4)
    guard.admins = frozenset()  # the test's own user is counted like any other
    index = guard.watch(router)
    router.bind(f"ipc://{tmp_path}/control.sock")
    guard.start()
    try:
        yield Guarded(guard, router, index, tmp_path / "control.sock")
    finally:
        guard.stop()
        router.close()
        context.term()


def _wait(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _works(datagram: tuple[socket.socket, socket.socket]) -> bool:
    """Whether a datagram pair (a child's notify socket, say) still carries READY=1."""
    try:
        datagram[1].send(b"READY=1")
    except OSError:
        return False
    datagram[0].settimeout(1)
    return datagram[0].recv(16) == b"READY=1"


def test_a_kick_never_shuts_a_socket_that_took_a_connections_number(guarded: Guarded) -> None:
    uid = os.geteuid()
    notify = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(guarded.path.with_name("other.sock")))
    other.listen()
    elsewhere = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    elsewhere.connect(str(guarded.path.with_name("other.sock")))
    accepted, _ = other.accept()
    try:
        with guarded.guard._lock:
            ledger = guarded.guard._ledger
            # The connections recorded ended, unseen; their numbers now are other sockets'. The
            # identity recorded is the connection's, or (worse) happens to match the new file.
            ledger.admit((guarded.index, notify[0].fileno()), uid, 1)
            inode = os.fstat(accepted.fileno()).st_ino
            ledger.admit((guarded.index, accepted.fileno()), uid, inode)
        assert guarded.guard.kick(uid, guarded.router) == 0
        assert _works(notify)
        elsewhere.sendall(b"ping")
        assert accepted.recv(4) == b"ping"
        with guarded.guard._lock:
            ledger.forget((guarded.index, notify[0].fileno()))
            ledger.forget((guarded.index, accepted.fileno()))
        # Asked about such a number, the guard refuses it (its client is gone) and leaves it be.
        guarded.guard._door.short = True  # every connection decided on now is refused
        assert not guarded.guard.admitted(guarded.index, notify[0].fileno())
        assert _works(notify)
        guarded.guard._door.short = False

        # The real thing is shut down.
        client = guarded.connect()
        _wait(lambda: len(guarded.held()) == 1, "the connection to be counted")
        assert guarded.guard.kick(uid, guarded.router) == 1
        assert client.recv(10) == b"", "closed"
        assert guarded.guard.kick(uid + 1, guarded.router) == 0
        client.close()
    finally:
        for s in (*notify, other, elsewhere, accepted):
            s.close()


def test_the_guard_goes_on_after_a_failure(
    guarded: Guarded, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard = guarded.guard
    read = guard._read
    failed = threading.Event()

    def fail_once(index: int, pair: Any) -> None:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("a bug")
        read(index, pair)

    # An end the thread will have missed: recorded, its descriptor closed since.
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with guard._lock:
        guard._ledger.admit((guarded.index, 999), os.geteuid() + 1, os.fstat(gone.fileno()).st_ino)
    gone.close()
    monkeypatch.setattr(guard, "_read", fail_once)
    with caplog.at_level(logging.CRITICAL, "circus_sd.control"):
        client = guarded.connect()
        _wait(lambda: len(guarded.held()) == 1, "the connection to be counted after the failure")
    assert failed.is_set() and guard._thread is not None and guard._thread.is_alive()
    assert "the connection guard failed (1 time(s) in a row)" in caplog.text
    with guard._lock:
        assert guard._ledger.count == 1, "the missed end was pruned"
    client.close()
    _wait(lambda: not guarded.held(), "its end to be seen")


# -- the control server's checks -----------------------------------------------------------------


def _server(endpoint: str) -> ControlServer:
    server = ControlServer.__new__(ControlServer)
    server.endpoint = endpoint
    server._tiers = {}
    server._own_uid = os.geteuid()
    server.owner_uid = None
    server.group = None
    server._srcfd_failed = False
    return server


def test_an_ipc_request_without_credentials_is_refused() -> None:
    request = parse_request(b'{"id": "1", "command": "status", "properties": {}}')
    with pytest.raises(CommandError) as refused:
        _server("ipc:///run/x.sock")._authorize(request, Tier.OPERATE, None)
    assert refused.value.errno == Errno.ACCESS_DENIED
    assert "credentials are unknown" in refused.value.reason
    # tcp has none, ever: its endpoint is refused at start-up unless loopback or CURVE.
    assert _server("tcp://127.0.0.1:5555")._authorize(request, Tier.ADMIN, None) is Tier.ADMIN
    assert _server("ipc:///run/x.sock")._authorize(request, Tier.ADMIN, (0, 0)) is Tier.ADMIN


def test_a_request_whose_connection_is_unknown_is_served_to_admins_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Frame:
        def get(self, option: int) -> int:
            raise zmq.ZMQError(errno.EINVAL)

    server = _server("ipc:///run/x.sock")
    server._guard = types.SimpleNamespace(admins=frozenset({0, 990}))  # type: ignore[assignment]
    assert server._admitted(Frame(), (990, 990))
    assert not server._admitted(Frame(), (1000, 1000))
    assert not server._admitted(Frame(), None)
    assert caplog.text.count("requests from users other than root") == 1


# -- subscriptions -------------------------------------------------------------------------------


def test_distinct_topics_are_counted_once_and_bounded() -> None:
    book = SubscriptionBook(limit=3)
    assert book.apply(b"\x01watcher.a.", 1000)
    assert not book.apply(b"\x01watcher.a.", 1001), "XPUB passes a topic's first subscription"
    assert book.apply(b"\x01watcher.b.", 1001)
    assert book.apply(b"\x01", 0)  # everything, by an admin
    assert book.offender(ADMINS) is None
    assert book.apply(b"\x01x1", 1000)
    assert book.offender(ADMINS) == Offender(1000)
    assert book.apply(b"\x00x1", None)
    assert book.offender(ADMINS) is None
    assert not book.apply(b"\x00never", None)
    assert not book.apply(b"", 5) and not book.apply(b"\x07", 5)
    assert set(book.topics) == {b"watcher.a.", b"watcher.b.", b""}


def test_admins_are_never_the_offender_and_a_departed_user_is_not_blamed() -> None:
    book = SubscriptionBook(limit=1)
    book.apply(b"\x01a", 0)
    book.apply(b"\x01b", 990)
    assert book.offender(ADMINS) is None
    book.apply(b"\x01c", 1000)
    book.apply(b"\x01d", 1000)
    book.apply(b"\x01e", 1001)
    assert book.offender(ADMINS) == Offender(1000)
    # 1000 holds no connection any more (its topics are held by others): 1001's turn.
    book.disown(1000)
    assert book.offender(ADMINS) == Offender(1001)
    book.disown(1001)
    assert book.offender(ADMINS) is None


# -- replies -------------------------------------------------------------------------------------


class Socket:
    """A ROUTER's answers to sends, per client: room for `room` more, or gone."""

    def __init__(self) -> None:
        self.room: dict[bytes, int] = {}
        self.sent: list[list[bytes]] = []

    def send(self, frames: list[bytes]) -> Sent:
        room = self.room.get(frames[0])
        if room is None:
            return Sent.GONE
        if room == 0:
            return Sent.FULL
        self.room[frames[0]] = room - 1
        self.sent.append(frames)
        return Sent.SENT


def test_replies_wait_for_room_in_order_and_within_a_byte_bound() -> None:
    socket = Socket()
    pending = PendingReplies(socket.send, limit=10)
    socket.room = {b"a": 1, b"b": 5}
    pending.send([b"a", b"1"])
    pending.send([b"a", b"2"])  # full: held
    pending.send([b"b", b"1"])
    pending.send([b"a", b"3"])  # behind the one held, even if there were room
    pending.send([b"a", b"x" * 20])  # past 10 bytes held: dropped
    assert (len(pending), pending.dropped) == (1, 1)
    socket.room[b"a"] = 5
    pending.flush()
    assert [f[1] for f in socket.sent if f[0] == b"a"] == [b"1", b"2", b"3"]
    assert len(pending) == 0


def test_one_large_reply_is_held_and_a_departed_client_is_forgotten() -> None:
    socket = Socket()
    pending = PendingReplies(socket.send, limit=10)
    socket.room = {b"a": 0}
    pending.send([b"a", b"x" * 100])
    assert len(pending) == 1, "a single reply is held however large"
    pending.send([b"a", b"y"])
    assert pending.dropped == 1
    del socket.room[b"a"]
    pending.flush()
    assert (len(pending), pending.dropped, socket.sent) == (0, 2, [])
    pending.send([b"a", b"z"])  # to a client already gone: dropped by the socket
    assert len(pending) == 0


# -- options -------------------------------------------------------------------------------------


def test_byte_sizes() -> None:
    parse = byte_size(4096, 1 << 30)
    assert parse("256K") == 256 << 10
    assert parse(" 1m ") == 1 << 20
    assert parse("4096") == 4096
    assert parse("1.5M") == 3 << 19
    for bad in ("", "K", "1T", "inf", "nan", "1e400", "-1M", "100", "2G", "1.3", "x"):
        with pytest.raises(OptionValueError):
            parse(bad)


def test_an_abstract_endpoint_is_refused_with_the_reason() -> None:
    with pytest.raises(OptionValueError, match="abstract socket has no file permissions"):
        endpoint_address("ipc://@circus")
    assert endpoint_address("ipc:///run/x.sock") == "ipc:///run/x.sock"
    assert endpoint_address("systemd:control") == "systemd:control"
    assert endpoint_address("") is None
