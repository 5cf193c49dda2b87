"""Restart policy arithmetic: backoff delays and the flapping window, on an injected clock."""

from __future__ import annotations

import collections
import dataclasses
import random


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
