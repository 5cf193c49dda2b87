"""Per-process statistics in Circus's `stats` format, read from /proc through psutil."""

from __future__ import annotations

import time
from typing import Any

import psutil

from circus_sd.process import child_pids
from circus_sd.sizes import human_bytes

NO_SUCH_PROCESS = "No such process (stopped?)"


def _ctime(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:05.2f}"


class ProcessStats:
    """Keeps psutil handles between calls, so that `cpu` is a real percentage since last time."""

    def __init__(self) -> None:
        self._handles: dict[int, psutil.Process] = {}

    def _handle(self, pid: int) -> psutil.Process:
        handle = self._handles.get(pid)
        if handle is None:
            handle = self._handles[pid] = psutil.Process(pid)
            handle.cpu_percent(None)
        return handle

    def forget(self, pid: int) -> None:
        self._handles.pop(pid, None)

    def info(self, pid: int, extended: bool = False, wid: int | None = None) -> Any:
        try:
            return self._info(self._handle(pid), extended, wid)
        except psutil.Error:
            self.forget(pid)
            return NO_SUCH_PROCESS

    def _info(self, process: psutil.Process, extended: bool, wid: int | None) -> dict[str, Any]:
        with process.oneshot():
            memory = process.memory_info()
            times = process.cpu_times()
            created = process.create_time()
            info: dict[str, Any] = {
                "pid": process.pid,
                "wid": wid,
                "mem_info1": human_bytes(memory.rss),
                "mem_info2": human_bytes(memory.vms),
                # Exact figures beside Circus's rounded strings (for plugins and exporters).
                "rss": memory.rss,
                "vms": memory.vms,
                "cpu": process.cpu_percent(None),
                "mem": round(process.memory_percent(), 1),
                "ctime": _ctime(times.user + times.system),
                "username": process.username(),
                "nice": process.nice(),
                "cmdline": process.name(),
                "create_time": created,
                "started": created,
                "age": round(time.time() - created, 3),
            }
        children = []
        for pid in child_pids(process.pid, recursive=extended):
            try:
                children.append(self._info(psutil.Process(pid), False, None))
            except psutil.Error:
                continue
        info["children"] = children
        return info

