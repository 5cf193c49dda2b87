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


def format_bytes(size: float) -> str:
    """`512B`, `1.5M`, `2.0G`: a memory figure in a narrow column."""
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}T"  # pragma: no cover - the loop returns at G


def _usage(info: Any) -> tuple[float, int]:
    """(CPU %, RSS bytes) of a process of a `stats` reply and its descendants."""
    if not isinstance(info, Mapping):
        return 0.0, 0
    cpu = info.get("cpu")
    rss = info.get("rss")
    total_cpu = float(cpu) if isinstance(cpu, int | float) else 0.0
    total_rss = int(rss) if isinstance(rss, int) else 0
    for child in info.get("children") or []:
        child_cpu, child_rss = _usage(child)
        total_cpu += child_cpu
        total_rss += child_rss
    return total_cpu, total_rss


def _state_cell(state: Any, reason: Any) -> Text:
    text = state_text(state)
    if reason:
        text.append(f" ({reason})", style="dim")
    return text


def status_view(reply: Reply, now: float) -> RenderableType:
    """One row per watcher, as `systemctl status` sums a unit up: state (reason), processes
    running of wanted, uptime, restarts, CPU and memory; its processes below it with `--all`.
    Cells never wrap: 40 processes are `40/40`, not a wrapped list of pids."""
    details = _details(reply)
    statuses = reply.get("statuses")
    if not details and not isinstance(statuses, Mapping):
        return state_text(reply.get("status"))  # `status NAME` from a plain Circus arbiter
    names = sorted(set(details) | set(statuses or {}))
    stats = reply.get("stats")
    usage = stats if isinstance(stats, Mapping) else None
    show_all = bool(reply.get("all"))
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("watcher", no_wrap=True, overflow="ellipsis")
    table.add_column("state", no_wrap=True, overflow="ellipsis", ratio=1)
    if details:
        for column in ("procs", "uptime", "restarts"):
            table.add_column(column, justify="right", no_wrap=True)
        if usage is not None:
            table.add_column("cpu", justify="right", no_wrap=True)
            table.add_column("mem", justify="right", no_wrap=True)
    readiness = any(isinstance(i, Mapping) and "processes" in i for i in details.values())
    if readiness:
        table.add_column("ready", justify="right", no_wrap=True)
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
        row: list[RenderableType] = [name, _state_cell(state, info.get("reason")), count,
                                     uptime, _dash(info.get("restarts"))]
        processes = usage.get(name) if usage is not None else None
        if usage is not None:
            figures = [_usage(p) for p in (processes or {}).values()] if isinstance(
                processes, Mapping) else []
            row += [f"{sum(c for c, _ in figures):.1f}%" if figures else "-",
                    format_bytes(sum(r for _, r in figures)) if figures else "-"]
        if readiness:
            ready_ones = _processes(info)
            ready = sum(1 for p in ready_ones if p.get("ready"))
            row.append(f"{ready}/{len(ready_ones)}" if "processes" in info else "-")
        table.add_row(*row)
        if show_all:
            _pid_rows(table, pids, processes if isinstance(processes, Mapping) else {},
                      usage is not None, readiness)
    if len(names) == 1 and readiness:
        return Group(table, Text(""), _readiness_view(_processes(details[names[0]])))
    return table


def _pid_rows(table: Table, pids: list[Any], processes: Mapping[str, Any], with_usage: bool,
              readiness: bool) -> None:
    """`status --all`: a row per process under its watcher's."""
    for index, pid in enumerate(pids):
        info = processes.get(str(pid))
        age = info.get("age") if isinstance(info, Mapping) else None
        branch = "└" if index == len(pids) - 1 else "├"
        row: list[RenderableType] = [f" {branch} {pid}", "", "",
                                     format_duration(age) if isinstance(age, int | float)
                                     else "", ""]
        if with_usage:
            cpu, rss = _usage(info)
            row += [f"{cpu:.1f}%", format_bytes(rss)] if info is not None else ["", ""]
        if readiness:
            row.append("")
        table.add_row(*row, style="dim")


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
