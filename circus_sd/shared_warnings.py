"""Warnings about what every watcher meets at once, said once at WARNING.

A shortage of descriptors or a lost spawner is the arbiter's, not one watcher's: the watchers
that meet it each say so (their own line, with WATCHER=, in `journalctl WATCHER=web`), and 100
watchers of 100 short of descriptors said it 70 times at WARNING. The first line of such a cause
(Log.shared) stays a warning; the others of the same cause within WINDOW seconds of it are
logged at INFO, with the same text.
"""

from __future__ import annotations

import logging

WINDOW = 30.0


class SharedWarnings:
    """The level to log a watcher's line at, given when its shared cause was last a warning."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._warned_at: dict[str, float] = {}

    def level(self, level: int, shared: str | None, now: float) -> int:
        if level != logging.WARNING or shared is None:
            return level
        last = self._warned_at.get(shared)
        if last is not None and now - last < self.window:
            return logging.INFO
        self._warned_at[shared] = now
        return level
