"""Restart policy arithmetic: backoff delays, the flapping window (on an injected clock), and
which failed spawns are the machine's shortage rather than the program's failure."""

from __future__ import annotations

import collections
import dataclasses
import errno
import random

# A spawn that failed with one of these, in the arbiter (a pipe, a dup, a pidfd, the descriptor
# reserve) or in the spawner (clone), lacked what the machine (or a limit on it) had to give:
# descriptors (EMFILE, ENFILE), process slots (EAGAIN), memory (ENOMEM). Not the program's
# failure: retried with backoff, never counted toward max_retry or flapping, and the processes
# that run are kept.
#
# Never the errno the child reports from its own setup or exec: by then the watcher's rlimits,
# identity and cwd apply, and ENOMEM (rlimit_as too low), EMFILE (rlimit_nofile too low) or
# EAGAIN (the watcher user's RLIMIT_NPROC) say that the configuration cannot work: retried
# forever they would hide it. Those are failed starts, given up after max_retry.
SHORTAGE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})
# The shortest wait before spawning again after a shortage, whatever backoff_initial says:
# retrying at once would only spin against the same limit.
SHORTAGE_MIN_DELAY = 0.1


# Why spawns were deferred (the `cause` of spawn_deferred events).
SHORTAGE_CAUSE = "shortage"
# The spawner was lost before it answered: whether it cloned the child is unknown, and the
# request goes to the next spawner (spawner.Spawner paces their starts).
SPAWNER_LOST_CAUSE = "spawner_lost"


def is_shortage(code: int | None) -> bool:
    """Did a spawn fail, in the arbiter or the spawner, with errno `code` for lack of the
    machine's resources? (Not for the child's own exec status: see SHORTAGE_ERRNOS.)"""
    return code in SHORTAGE_ERRNOS


def shortage_delay(holds: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Wait before spawning again after the `holds`-th shortage in a row (holds >= 1)."""
    return max(SHORTAGE_MIN_DELAY, backoff_delay(holds, initial, maximum, rng))


def backoff_delay(failures: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Delay before restarting a worker after `failures` consecutive failed starts.

    `initial * 2**(failures-1)`, capped at `maximum`, with +-10 % jitter so that workers that
    failed together do not restart together. No failure means no delay.
    """
    if failures <= 0:
        return 0.0
    # Cap the exponent too: 2**1000 is a float overflow long before any sane backoff_max.
    base = min(initial * 2.0 ** min(failures - 1, 64), maximum)
    return max(0.0, base * rng.uniform(0.9, 1.1))


@dataclasses.dataclass
class FlappingDetector:
    """Counts failed starts of a watcher within a sliding window (Circus 0.3's rule)."""

    attempts: int
    window: float
    _failures: collections.deque[float] = dataclasses.field(default_factory=collections.deque)

    def record_failure(self, now: float) -> bool:
        """Record a failed start at `now`; True when the watcher is now flapping."""
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window:
            self._failures.popleft()
        return len(self._failures) >= self.attempts

    def reset(self) -> None:
        self._failures.clear()
