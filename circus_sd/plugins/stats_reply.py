"""A `stats` reply read into figures per watcher (for the statsd and Prometheus plugins)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from circus_sd.config.plugin_options import parse_size


@dataclasses.dataclass(frozen=True)
class ProcessFigures:
    pid: int
    cpu: float  # % of one core since the arbiter's previous `stats` of this process
    mem_percent: float
    rss: int  # resident bytes
    children: tuple[ProcessFigures, ...] = ()
    # CPU seconds used so far (circus-sd's `cpu_seconds`; 0 from Circus, which has none).
    cpu_seconds: float = 0.0
    wid: int | None = None
    # Start time, seconds since the epoch (tells a reused pid apart).
    started: float = 0.0

    @classmethod
    def parse(cls, info: Any) -> ProcessFigures | None:
        """From a process `info` dict; None for Circus's "No such process" string."""
        if not isinstance(info, Mapping):
            return None
        children = tuple(
            child for child in (cls.parse(c) for c in info.get("children") or ()) if child
        )
        return cls(
            pid=int(info.get("pid") or 0),
            cpu=_number(info.get("cpu")),
            mem_percent=_number(info.get("mem")),
            rss=_bytes(info),
            children=children,
            cpu_seconds=_number(info.get("cpu_seconds")),
            wid=info.get("wid") if isinstance(info.get("wid"), int) else None,
            started=_number(info.get("create_time")),
        )

    @property
    def tree_rss(self) -> int:
        return self.rss + sum(child.tree_rss for child in self.children)

    @property
    def tree_cpu(self) -> float:
        return self.cpu + sum(child.tree_cpu for child in self.children)

    def tree(self) -> list[ProcessFigures]:
        """This process and all its descendants."""
        return [self, *(p for child in self.children for p in child.tree())]


def _number(value: Any) -> float:
    # Circus answers "N/A" when it cannot tell.
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _bytes(info: Mapping[str, Any]) -> int:
    """circus-sd's exact `rss`, else Circus's rounded `mem_info1` ("3.2M")."""
    rss = info.get("rss")
    if isinstance(rss, int):
        return rss
    return parse_size(str(info.get("mem_info1") or "")) or 0


def watcher_processes(info: Mapping[str, Any]) -> list[ProcessFigures]:
    """The processes of one watcher's `info` ({pid: process info}), gone ones left out."""
    return [p for p in (ProcessFigures.parse(v) for v in info.values()) if p is not None]


def by_watcher(reply: Mapping[str, Any]) -> dict[str, list[ProcessFigures]]:
    """Every watcher's processes from a `stats` reply without a name (`infos`)."""
    infos = reply.get("infos") or {}
    return {name: watcher_processes(info or {}) for name, info in infos.items()}
