"""The spawner's handle replaces a lost spawner: stand-in spawners are `sleep` processes, and the
test answers (or not) on the other end of each socketpair."""

from __future__ import annotations

import asyncio
import errno
import os
import pickle
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from circus_sd.spawn_protocol import SpawnRequest
from circus_sd.spawner import Spawner, SpawnerLost, SpawnError

REQUEST = SpawnRequest("/bin/true", ("true",), {})


class StandIns:
    """Starts stand-in spawners: a child process and a socketpair whose far end we hold."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.theirs: list[socket.socket] = []
        self.handle: Spawner | None = None
        self.losses: list[tuple[float, int]] = []

    def spawner(self, answer_deadline: float = 5.0) -> Spawner:
        """The handle under test, on a first stand-in, starting the next ones when needed."""
        self.handle = Spawner(*self.start(), start=self.start, answer_deadline=answer_deadline)
        self.handle.after_loss = self.after_loss
        return self.handle

    def after_loss(self, since: float) -> None:
        """Records the call, with how many stand-ins had been started by then."""
        self.losses.append((since, len(self.processes)))

    def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        async def attached() -> None:
            assert self.handle is not None
            self.handle.attach(asyncio.get_running_loop())
            await scenario()

        asyncio.run(attached())

    def start(self) -> tuple[int, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        theirs.setblocking(False)
        self.processes.append(subprocess.Popen(["sleep", "30"]))
        self.theirs.append(theirs)
        return self.processes[-1].pid, ours

    def close(self) -> None:
        if self.handle is not None:
            self.handle.stop()
        for process in self.processes:
            process.kill()
            process.wait(5)
        for sock in self.theirs:
            sock.close()


@pytest.fixture
def stand_ins() -> Iterator[StandIns]:
    made = StandIns()
    yield made
    made.close()


async def received(sock: socket.socket, timeout: float = 5.0) -> SpawnRequest:
    loop = asyncio.get_running_loop()
    data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), timeout)
    request = pickle.loads(data)
    assert isinstance(request, SpawnRequest)
    return request


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def test_a_spawner_that_answers_nothing_is_killed_and_replaced(stand_ins: StandIns) -> None:
    spawner = stand_ins.spawner(answer_deadline=0.2)
    first = stand_ins.processes[0]

    async def scenario() -> None:
        unanswered = spawner.spawn(REQUEST)
        await received(stand_ins.theirs[0])
        with pytest.raises(SpawnError, match="answered nothing"):
            await asyncio.wait_for(unanswered, 5)
        await until(lambda: first.pid not in spawner.pids)  # killed, and reaped
        await until(lambda: len(stand_ins.processes) == 2)  # then another one started
        assert spawner.pid == stand_ins.processes[1].pid
        # The next request goes to the new spawner.
        answered = spawner.spawn(REQUEST)
        await received(stand_ins.theirs[1])
        stand_ins.theirs[1].send(pickle.dumps(("error", errno.EAGAIN, "try again")))
        with pytest.raises(SpawnError) as raised:
            await asyncio.wait_for(answered, 5)
        assert raised.value.errno == errno.EAGAIN

    stand_ins.run(scenario)


def test_losses_in_a_row_back_off_and_requests_meanwhile_wait(stand_ins: StandIns) -> None:
    spawner = stand_ins.spawner()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        stand_ins.processes[0].send_signal(signal.SIGKILL)
        await until(lambda: len(stand_ins.processes) == 2)  # the first loss: at once
        lost_at = loop.time()
        stand_ins.processes[1].send_signal(signal.SIGKILL)
        await until(lambda: stand_ins.processes[1].pid not in spawner.pids)
        waiting = spawner.spawn(REQUEST)
        assert spawner.in_flight == 1, "a request made while no spawner runs is in flight"
        await until(lambda: len(stand_ins.theirs) == 3)
        await received(stand_ins.theirs[2])
        assert loop.time() - lost_at >= 0.4, "the second loss in a row waits before a restart"
        assert not waiting.done()

    stand_ins.run(scenario)


def test_stop_kills_a_spawner_that_does_not_exit(stand_ins: StandIns) -> None:
    spawner = stand_ins.spawner()
    sleeper = stand_ins.processes[0]
    sleeper.send_signal(signal.SIGSTOP)

    spawner.stop(grace=0.1)

    assert spawner.pids == frozenset()
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.pidfd_open(sleeper.pid)


def test_a_lost_spawners_requests_are_deferred_and_its_clones_dealt_with_first(
    stand_ins: StandIns,
) -> None:
    """Its unanswered requests fail with SpawnerLost (the arbiter defers them, not a failed
    start); `after_loss` is called once the lost spawner is gone and before the next one
    starts, with the time since which it had unanswered requests (its clones are younger)."""
    spawner = stand_ins.spawner(answer_deadline=0.2)

    async def scenario() -> None:
        answered = spawner.spawn(REQUEST)
        await received(stand_ins.theirs[0])
        stand_ins.theirs[0].send(pickle.dumps(("error", errno.EAGAIN, "try again")))
        with pytest.raises(SpawnError) as raised:
            await asyncio.wait_for(answered, 5)
        assert not isinstance(raised.value, SpawnerLost), "an answer is no loss"
        before = time.clock_gettime(time.CLOCK_BOOTTIME)
        unanswered = spawner.spawn(REQUEST)
        await received(stand_ins.theirs[0])
        with pytest.raises(SpawnerLost) as lost:
            await asyncio.wait_for(unanswered, 5)
        assert lost.value.errno == errno.EPIPE and "answered nothing" in str(lost.value)
        await until(lambda: len(stand_ins.processes) == 2)
        ((since, started),) = stand_ins.losses
        assert started == 1, "called before the next spawner started"
        assert before <= since <= time.clock_gettime(time.CLOCK_BOOTTIME)
        assert stand_ins.processes[0].poll() is not None, "the lost one is gone by then"

    stand_ins.run(scenario)


def test_a_spawner_lost_with_nothing_unanswered_has_no_clones_to_deal_with(
    stand_ins: StandIns,
) -> None:
    spawner = stand_ins.spawner()

    async def scenario() -> None:
        stand_ins.processes[0].send_signal(signal.SIGKILL)
        await until(lambda: len(stand_ins.processes) == 2)
        assert spawner.pid == stand_ins.processes[1].pid
        assert stand_ins.losses == []

    stand_ins.run(scenario)


def test_stop_works_with_a_pidfd_above_fd_setsize(stand_ins: StandIns) -> None:
    """select() raises ValueError for a descriptor >= 1024, common in the arbiter (it raises
    RLIMIT_NOFILE; a replacement spawner's pidfd is opened while children hold descriptors):
    stop(), the first step of the arbiter's last kill-and-reap, must not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1200
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    fillers: list[int] = []
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        fillers.append(null)
        while fillers[-1] < 1100:
            fillers.append(os.dup(null))
        spawner = stand_ins.spawner()
    finally:
        for fd in fillers:
            os.close(fd)
    assert spawner._pidfd is not None and spawner._pidfd >= 1024
    sleeper = stand_ins.processes[0]
    sleeper.send_signal(signal.SIGSTOP)  # does not exit: killed after the grace

    spawner.stop(grace=0.1)

    assert spawner.pids == frozenset()
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.pidfd_open(sleeper.pid)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
