"""The signals the arbiter handles in its event loop, kept away from its other threads.

A process-directed signal goes to any thread that does not block it. Python's C handler then
only notes it and writes to the loop's wakeup fd, which is harmless while the loop turns, but
loses the signal in the last moments of a re-execution, when the loop no longer turns: the main
thread blocks them then, so that they stay pending across execve for the next program. Every
thread the arbiter starts is therefore started with them blocked (a thread inherits the mask of
the thread that creates it), so only the main thread ever takes them.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

# The signals the arbiter handles (arbiter.Request); blocked across a re-execution's execve.
HANDLED_SIGNALS = frozenset(
    {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD}
)


@contextlib.contextmanager
def handled_signals_blocked() -> Iterator[None]:
    """The handled signals blocked in this thread for the block, and in the threads it starts
    for good."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
