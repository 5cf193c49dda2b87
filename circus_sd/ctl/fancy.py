"""Readable tables of replies for a terminal (rich); scripts get circus_sd.ctl.plain instead."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from circus_sd.ctl.plain import Reply, format_reply, is_error, option_text

STATE_STYLES = {
    "active": "green",
    "starting": "yellow",
    "stopping": "yellow",
    "stopped": "dim",
    "paused": "red",
    "failed": "bold red",
}


def format_duration(seconds: float) -> str:
    """`42s`, `5m07s`, `3h02m`, `2d04h`: an uptime at a glance."""
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def state_text(state: Any) -> Text:
    return Text(str(state), style=STATE_STYLES.get(str(state), ""))


def _dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _details(reply: Reply) -> Mapping[str, Any]:
    details = reply.get("details")
    return details if isinstance(details, Mapping) else {}


def status_view(reply: Reply, now: float) -> RenderableType:
    """One row per watcher: state, processes, pids, uptime, restarts (what the reply has)."""
    details = _details(reply)
    statuses = reply.get("statuses")
    if not details and not isinstance(statuses, Mapping):
        return state_text(reply.get("status"))  # `status NAME` from a plain Circus arbiter
    names = sorted(set(details) | set(statuses or {}))
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("watcher")
    table.add_column("state")
    if details:
        table.add_column("processes", justify="right")
        table.add_column("pids")
        table.add_column("uptime", justify="right")
        table.add_column("restarts", justify="right")
        table.add_column("reason")
    readiness = any(isinstance(i, Mapping) and "processes" in i for i in details.values())
    if readiness:
        table.add_column("ready", justify="right")
    for name in names:
        info = details.get(name)
        if not isinstance(info, Mapping):
            info = {}
        state = info.get("state") or (statuses or {}).get(name) or reply.get("status")
        if not details:
            table.add_row(name, state_text(state))
            continue
        pids = info.get("pids") or []
        wanted = info.get("numprocesses")
        count = f"{len(pids)}/{wanted}" if wanted is not None else str(len(pids))
        started = info.get("started")
        uptime = format_duration(now - started) if isinstance(started, int | float) else "-"
        row = [name, state_text(state), count, ", ".join(str(pid) for pid in pids) or "-",
               uptime, _dash(info.get("restarts")), _dash(info.get("reason"))]
        if readiness:
            processes = _processes(info)
            ready = sum(1 for p in processes if p.get("ready"))
            row.append(f"{ready}/{len(processes)}" if "processes" in info else "-")
        table.add_row(*row)
    if len(names) == 1 and readiness:
        return Group(table, Text(""), _readiness_view(_processes(details[names[0]])))
    return table


def _processes(info: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = info.get("processes")
    return [p for p in found if isinstance(p, Mapping)] if isinstance(found, list) else []


def _readiness_view(processes: list[Mapping[str, Any]]) -> Table:
    """`status NAME` of a watcher whose processes report readiness: each one's, and its STATUS=."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("wid", "pid", "ready", "status (sd_notify)"):
        table.add_column(column)
    for process in processes:
        ready = Text("ready", style="green") if process.get("ready") else Text("not yet",
                                                                                style="yellow")
        table.add_row(_dash(process.get("wid")), _dash(process.get("pid")), ready,
                      _dash(process.get("status")))
    return table


def _process_rows(table: Table, watcher: str, pid: str, info: Any, indent: str = "") -> None:
    if not isinstance(info, Mapping):
        table.add_row(watcher, indent + str(pid), str(info))
        return
    age = info.get("age")
    table.add_row(
        watcher, indent + str(info.get("pid", pid)), _dash(info.get("cmdline")),
        _dash(info.get("username")), _dash(info.get("cpu")), _dash(info.get("mem")),
        _dash(info.get("mem_info1")), _dash(info.get("mem_info2")),
        format_duration(age) if isinstance(age, int | float) else _dash(info.get("ctime")),
    )
    for child in info.get("children") or []:
        child_pid = child.get("pid", "?") if isinstance(child, Mapping) else "?"
        _process_rows(table, "", str(child_pid), child, indent + "└ ")


def stats_view(reply: Reply, now: float) -> RenderableType:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify in (("watcher", "left"), ("pid", "left"), ("cmd", "left"),
                            ("user", "left"), ("cpu %", "right"), ("mem %", "right"),
                            ("rss", "right"), ("vms", "right"), ("age", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    if "infos" in reply:
        for watcher, processes in (reply.get("infos") or {}).items():
            for index, (pid, info) in enumerate((processes or {}).items()):
                _process_rows(table, watcher if index == 0 else "", pid, info)
    elif "name" in reply:
        for index, (pid, info) in enumerate((reply.get("info") or {}).items()):
            _process_rows(table, str(reply["name"]) if index == 0 else "", pid, info)
    else:
        _process_rows(table, "", str(reply.get("process")), reply.get("info"))
    return table


def dstats_view(reply: Reply, now: float) -> RenderableType:
    table = stats_view({"process": "", "info": reply.get("info")}, now)
    assert isinstance(table, Table)
    table.columns[0].header = ""
    return table


def options_view(reply: Reply, now: float) -> RenderableType:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("option")
    table.add_column("value", overflow="fold")
    for key, value in sorted((reply.get("options") or {}).items()):
        table.add_row(key, option_text(key, value))
    return table


def sockets_view(reply: Reply, now: float) -> RenderableType:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("fd", "name", "address", "backlog"):
        table.add_column(column)
    for sock in reply.get("sockets") or []:
        where = sock.get("path") if "path" in sock else f"{sock.get('host')}:{sock.get('port')}"
        table.add_row(_dash(sock.get("fd")), _dash(sock.get("name")), _dash(where),
                      _dash(sock.get("backlog")))
    return table


VIEWS: dict[str, Callable[[Reply, float], RenderableType]] = {
    "status": status_view,
    "stats": stats_view,
    "dstats": dstats_view,
    "options": options_view,
    "get": options_view,
    "globaloptions": options_view,
    "listsockets": sockets_view,
}


def render(out: Console, err: Console, command: str, reply: Reply, now: float) -> None:
    """Print a reply for a person: a table where one helps, Circus's line otherwise."""
    if is_error(reply):
        err.print(Text(format_reply(command, reply), style="bold red"))
        return
    view = VIEWS.get(command)
    if view is not None:
        out.print(view(reply, now))
    else:
        out.print(Text(format_reply(command, reply)))
