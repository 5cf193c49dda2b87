"""Running out of file descriptors: the spawn reserve's arithmetic, and the spawner client's
answers when a descriptor cannot be had (a failed spawn, never a stuck one)."""

from __future__ import annotations

import asyncio
import errno
import os
import pickle
import socket
import subprocess

import pytest

from circus_sd.fd_reserve import PER_SPAWN, RECOUNT_SECONDS, RESERVE, FdReserve, open_fds
from circus_sd.spawn_protocol import SpawnRequest
from circus_sd.spawner import Spawner, SpawnError


class Fake:
    """Descriptor count, limit and clock, set by the test."""

    def __init__(self, count: int, limit: int) -> None:
        self.count, self.limit, self.now, self.counted = count, limit, 0.0, 0

    def reserve(self) -> FdReserve:
        def count() -> int:
            self.counted += 1
            return self.count

        return FdReserve(count, lambda: self.limit, lambda: self.now)


def test_spawns_go_ahead_until_the_reserve_would_be_touched() -> None:
    fake = Fake(count=100, limit=1000)
    reserve = fake.reserve()
    allowed = 0
    while reserve.refusal() is None:
        allowed += 1
        fake.count += 3  # what each process really keeps (pidfd, two pipes)
        assert allowed < 1000
    # Refused once the real count plus one spawn's worst case would reach into the reserve.
    usable = 1000 - RESERVE
    assert 100 + 3 * allowed + PER_SPAWN > usable >= 100 + 3 * (allowed - 1) + PER_SPAWN
    assert reserve.refusal() == (
        f"too many open files: {100 + 3 * allowed} of RLIMIT_NOFILE 1000 in use "
        f"({RESERVE} kept free for the control socket)"
    )
    assert fake.counted < allowed / 2, "counted only when the estimate came near the limit"


def test_the_count_is_taken_again_near_the_limit_and_once_a_second() -> None:
    fake = Fake(count=10, limit=1 << 20)
    reserve = fake.reserve()
    for _ in range(1000):
        assert reserve.refusal() is None
    assert fake.counted == 1, "far from the limit, one count a second is enough"
    fake.now += RECOUNT_SECONDS
    assert reserve.refusal() is None
    assert fake.counted == 2

    fake = Fake(count=10, limit=200)
    reserve = fake.reserve()
    # Near the limit the estimate (PER_SPAWN each) gives way to the real count: descriptors
    # that were given back (here: none were taken) let spawns go on.
    assert all(reserve.refusal() is None for _ in range(40))
    assert fake.counted > 1
    # Descriptors taken by others (clients, files) are seen at the next count, a second later.
    fake.count, fake.now = 200 - RESERVE - PER_SPAWN + 1, fake.now + RECOUNT_SECONDS
    assert reserve.refusal() is not None
    fake.count = 10
    assert reserve.refusal() is None, "refused: counted again at once"


def test_a_small_limit_keeps_a_quarter_of_it() -> None:
    fake = Fake(count=30, limit=64)
    reserve = fake.reserve()
    assert reserve.refusal() is None  # 30 + 8 <= 48
    fake.count, fake.now = 41, fake.now + RECOUNT_SECONDS
    refusal = reserve.refusal()
    assert refusal is not None and "(16 kept free for the control socket)" in refusal


def test_open_fds_counts_this_process() -> None:
    before = open_fds()
    extra = [os.open(os.devnull, os.O_RDONLY) for _ in range(5)]
    try:
        assert open_fds() == before + 5
    finally:
        for fd in extra:
            os.close(fd)


def _spawner_pair() -> tuple[Spawner, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return Spawner(os.getpid(), ours), theirs


def test_an_answer_without_the_status_descriptor_kills_the_child_and_fails_the_spawn() -> None:
    """What recvmsg gives when the arbiter is at its limit: the pid, but no descriptor (the
    kernel drops it). The child cannot be watched: it is killed, and the spawn fails."""
    child = subprocess.Popen(["sleep", "30"])
    spawner, theirs = _spawner_pair()

    async def scenario() -> BaseException | None:
        spawner.attach(asyncio.get_running_loop())
        future = spawner.spawn(SpawnRequest("/bin/true", ("true",), {}))
        assert pickle.loads(theirs.recv(1 << 20)).executable == "/bin/true"
        theirs.send(pickle.dumps(("ok", child.pid)))
        await asyncio.wait_for(asyncio.shield(future), 5)
        return None

    try:
        with pytest.raises(SpawnError) as raised:
            asyncio.run(scenario())
        assert raised.value.errno == errno.EMFILE
        assert child.wait(5) == -9
        assert spawner.in_flight == 0
    finally:
        child.kill()
        child.wait(5)
        spawner.close()
        theirs.close()


def test_a_descriptor_that_cannot_be_duplicated_fails_the_spawn_at_once() -> None:
    spawner, theirs = _spawner_pair()
    closed = 1 << 30  # beyond any descriptor table: EBADF

    async def scenario() -> None:
        spawner.attach(asyncio.get_running_loop())
        future = spawner.spawn(SpawnRequest("/bin/true", ("true",), {}), [closed])
        with pytest.raises(SpawnError) as raised:
            await asyncio.wait_for(future, 5)
        assert raised.value.errno == errno.EBADF
        assert spawner.in_flight == 0

    try:
        asyncio.run(scenario())
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            theirs.recv(1 << 20)  # nothing was sent
    finally:
        spawner.close()
        theirs.close()
