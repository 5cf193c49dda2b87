"""`ready_log_line`: a process's output searched for it, in bounded time, until it is ready.

A regular expression can backtrack for hours on a short line (`^(a+)+$` on 40 `a`s and a `b`),
and `re` runs in the arbiter's event loop without ever yielding. So the work is bounded three
ways: only lines of a process not ready yet are searched, only the first `SEARCHED_BYTES` of
each line, and a process's searches share `CPU_BUDGET` seconds of CPU in all; a search that
would exceed it is interrupted (a CPU timer's signal; `re` checks for signals as it runs) and
that process's output is not searched again. Its readiness then falls to `ready_timeout`.

The timer counts the CPU of every thread of the arbiter (zmq's I/O threads, the log's writer...),
the budget only the searching thread's: a search interrupted before its own time is spent resumes
where it was, with what is left, `RESUMES` times at most (then that process is given up as if
its budget were spent).
"""

from __future__ import annotations

import functools
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

from circus_sd.output.lines import Buffer
from circus_sd.output.sink import Origin

log = logging.getLogger(__name__)

# Of each line (or each piece of a line cut at max_line), this many first bytes are searched.
SEARCHED_BYTES = 4096
# CPU seconds all the searches of one process's lines may take together.
CPU_BUDGET = 0.5
# An interrupted search whose own CPU is below the budget (other threads used the timer's) is
# resumed at most this many times.
RESUMES = 4


class OutOfTime(Exception):
    """Raised in the middle of a search by the CPU timer's signal."""


class CpuTimer:
    """ITIMER_VIRTUAL (the process's user CPU time) whose SIGVTALRM interrupts the main thread.

    The handler stays installed: a signal still in flight when the timer is disarmed then finds
    it, and does nothing, instead of the default action (terminating the arbiter).
    """

    def __init__(self) -> None:
        self._armed = False
        self._installed = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._armed:
            self._armed = False
            raise OutOfTime

    def usable(self) -> bool:
        """Only the main thread receives Python signal handlers' exceptions."""
        if threading.current_thread() is not threading.main_thread():
            return False
        if not self._installed:
            signal.signal(signal.SIGVTALRM, self._on_signal)
            self._installed = True
        return True

    def arm(self, seconds: float) -> None:
        self._armed = True
        signal.setitimer(signal.ITIMER_VIRTUAL, max(seconds, 1e-6))

    def disarm(self) -> None:
        self._armed = False
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)


_timer = CpuTimer()


@functools.lru_cache(maxsize=64)
def line_pattern(expression: str) -> re.Pattern[bytes]:
    """`ready_log_line`, searched in each line (bytes, as the program wrote them)."""
    return re.compile(expression.encode(errors="surrogateescape"))


def searched_parts(lines: list[Buffer], limit: int = SEARCHED_BYTES) -> Iterator[bytes]:
    """What is searched of a block of whole lines: each line's first `limit` bytes, split
    further at b"\\r" as `bytes.splitlines` does (a progress display rewrites its line)."""
    for block in lines:
        data = bytes(block)  # no copy for bytes; a memoryview has no find()
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            if end < 0:
                end = len(data)
            yield from data[start : min(end, start + limit)].splitlines() or [b""]
            start = end + 1


class ReadyLineSearch:
    """Per process: the CPU its searches have taken; processes whose budget ran out.

    `timer` interrupts a search (`OutOfTime`) and `clock` measures the searching thread's CPU:
    both replaceable, for tests.
    """

    def __init__(
        self,
        budget: float = CPU_BUDGET,
        limit: int = SEARCHED_BYTES,
        *,
        timer: CpuTimer = _timer,
        clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.budget = budget
        self.limit = limit
        self._timer = timer
        self._clock = clock
        self._spent: dict[int, float] = {}
        self._exhausted: set[int] = set()

    def search(self, origin: Origin, expression: str, lines: list[Buffer]) -> bool:
        """Does a line of this block match? False once the process's budget is spent."""
        pid = origin.pid
        if pid in self._exhausted:
            return False
        pattern = line_pattern(expression)
        if not self._timer.usable():
            return any(pattern.search(part) for part in searched_parts(lines, self.limit))
        # Cut before the timer runs: an interruption inside a generator would end it.
        parts = list(searched_parts(lines, self.limit))
        spent = self._spent.get(pid, 0.0)
        found: bool | None = None
        index = 0  # the part being searched: where an interrupted search resumes
        interruptions = 0
        while True:
            started = self._clock()
            try:
                try:
                    self._timer.arm(self.budget - spent)
                    matched = False
                    for index in range(index, len(parts)):  # noqa: B020 (resumes at index)
                        if pattern.search(parts[index]):
                            matched = True
                            break
                    found = matched
                finally:
                    self._timer.disarm()
            except OutOfTime:
                self._timer.disarm()
                interruptions += 1
            spent += self._clock() - started
            if found is not None or spent >= self.budget or interruptions > RESUMES:
                break
            # Interrupted before this thread spent the budget: other threads used the CPU.
        self._spent[pid] = spent
        if found is None or (not found and spent >= self.budget):
            self._exhausted.add(pid)
            log.warning(
                "%s[%d] pid %d: searching its output for ready_log_line took %.2f s of CPU "
                "(budget %.2f s, interrupted %d times): its output is no longer searched "
                "(ready_timeout decides)",
                origin.watcher, origin.wid, pid, spent, self.budget, interruptions,
            )
            return False
        return found

    def forget(self, pid: int) -> None:
        """`pid` is ready, failed or gone: its lines are not searched any more."""
        self._spent.pop(pid, None)
        self._exhausted.discard(pid)
