"""Warnings about what every watcher meets at once, said once at WARNING.

A shortage of descriptors or a lost spawner is the arbiter's, not one watcher's: the watchers
that meet it each say so (their own line, with WATCHER=, in `journalctl WATCHER=web`), and 100
watchers of 100 short of descriptors said it 70 times at WARNING. The first line of such a kind
stays a warning; the others within WINDOW seconds of it are logged at INFO, with the same text.
"""

from __future__ import annotations

import logging

from circus_sd.message_ids import MessageId

# The kinds of lines whose cause is the arbiter's, whichever watcher says it.
SHARED_KINDS = frozenset({MessageId.SPAWNS_DEFERRED})
WINDOW = 30.0


class SharedWarnings:
    """The level to log a watcher's line at, given when its kind was last a warning."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._warned_at: dict[MessageId, float] = {}

    def level(self, level: int, kind: MessageId, now: float) -> int:
        if level != logging.WARNING or kind not in SHARED_KINDS:
            return level
        last = self._warned_at.get(kind)
        if last is not None and now - last < self.window:
            return logging.INFO
        self._warned_at[kind] = now
        return level
