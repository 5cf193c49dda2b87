"""The one line `systemctl status` shows for the arbiter (sd_notify STATUS=)."""

from __future__ import annotations

from collections.abc import Mapping

from circus_sd.states import RUNNING_STATES, WatcherState
from circus_sd.watcher import Watcher


def status_line(watchers: Mapping[str, Watcher], last_error: str) -> str:
    """Watchers active, processes, who is flapping, failed or short of resources, last error."""
    active = sum(w.state in RUNNING_STATES for w in watchers.values())
    processes = sum(w.process_count for w in watchers.values())
    parts = [f"{active}/{len(watchers)} watchers active, {processes} processes"]
    for state, label in ((WatcherState.PAUSED, "flapping"), (WatcherState.FAILED, "failed")):
        names = sorted(n for n, w in watchers.items() if w.state is state)
        if names:
            parts.append(f"{label}: {', '.join(names)}")
    short = sorted(n for n, w in watchers.items() if w.shortage is not None)
    if short:
        parts.append(f"short of resources: {', '.join(short)}")
    if last_error:
        parts.append(f"last error: {last_error}")
    return "; ".join(parts)
