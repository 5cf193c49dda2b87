"""Per-process statistics in Circus's `stats` format, read from /proc through psutil."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from circus_sd.process import child_pids
from circus_sd.sizes import human_bytes

if TYPE_CHECKING:
    # Imported by the first `stats` call, not at start: psutil costs the arbiter 11 ms of its
    # start and 0.8 MB, and most arbiters are never asked for stats.
    import psutil

NO_SUCH_PROCESS = "No such process (stopped?)"


def _ctime(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:05.2f}"


class ProcessStats:
    """Keeps a psutil handle per process between calls, descendants included, so that `cpu` is
    a real percentage since the last call (or, at a process's first call, since its birth)."""

    def __init__(self) -> None:
        self._handles: dict[int, psutil.Process] = {}
        # The descendants' handles, by the process whose stats show them: kept while they
        # live, dropped with it.
        self._descendants: dict[int, dict[int, psutil.Process]] = {}

    def forget(self, pid: int) -> None:
        self._handles.pop(pid, None)
        self._descendants.pop(pid, None)

    def info(self, pid: int, extended: bool = False, wid: int | None = None) -> Any:
        import psutil

        try:
            process = self._handles.get(pid)
            first = process is None
            if process is None:
                process = self._handles[pid] = psutil.Process(pid)
            info = self._info(process, first, wid)
        except psutil.Error:
            self.forget(pid)
            return NO_SUCH_PROCESS
        info["children"] = self._children(pid, extended)
        return info

    def _children(self, pid: int, recursive: bool) -> list[dict[str, Any]]:
        import psutil

        known = self._descendants.get(pid, {})
        kept: dict[int, psutil.Process] = {}
        children = []
        for child in child_pids(pid, recursive=recursive):
            process = known.get(child)
            # A pid seen before may have been reused by another process since.
            first = process is None or not process.is_running()
            try:
                if first:
                    process = psutil.Process(child)
                assert process is not None
                children.append(self._info(process, first, None))
            except psutil.Error:
                continue
            kept[child] = process
        self._descendants[pid] = kept
        return children

    def _info(self, process: psutil.Process, first: bool, wid: int | None) -> dict[str, Any]:
        with process.oneshot():
            memory = process.memory_info()
            times = process.cpu_times()
            created = process.create_time()
            busy = times.user + times.system
            cpu = process.cpu_percent(None)
            if first:
                # No earlier sample: its average since it started.
                cpu = round(100.0 * busy / max(time.time() - created, 1e-3), 1)
            return {
                "pid": process.pid,
                "wid": wid,
                "mem_info1": human_bytes(memory.rss),
                "mem_info2": human_bytes(memory.vms),
                # Exact figures beside Circus's rounded strings (for plugins and exporters).
                "rss": memory.rss,
                "vms": memory.vms,
                "cpu": cpu,
                # Seconds of CPU used so far: what counters (Prometheus) are made of.
                "cpu_seconds": busy,
                "mem": round(process.memory_percent(), 1),
                "ctime": _ctime(busy),
                "username": process.username(),
                "nice": process.nice(),
                "cmdline": process.name(),
                "create_time": created,
                "started": created,
                "age": round(time.time() - created, 3),
            }
