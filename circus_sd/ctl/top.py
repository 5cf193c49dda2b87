"""`circusctl top`: watchers and their processes, refreshed every second from status and stats."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from circus_sd.client import CallError
from circus_sd.ctl.fancy import format_duration, state_text
from circus_sd.ctl.plain import Reply, error_line, is_error

if TYPE_CHECKING:
    from circus_sd.ctl.app import Session
    from circus_sd.ctl.commandline import Invocation

REFRESH_SECONDS = 1.0


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def top_view(status: Reply, stats: Reply, endpoint: str, now: float) -> RenderableType:
    """A header line and one row per process (one per watcher without any)."""
    details = _mapping(status.get("details"))
    statuses = _mapping(status.get("statuses"))
    infos = _mapping(stats.get("infos"))
    table = Table(box=None, header_style="bold reverse", pad_edge=False, expand=True)
    for column, justify in (("watcher", "left"), ("state", "left"), ("pid", "right"),
                            ("cpu %", "right"), ("mem %", "right"), ("rss", "right"),
                            ("uptime", "right"), ("restarts", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    names = sorted(set(statuses) | set(details) | set(infos))
    processes_total = 0
    for name in names:
        detail = _mapping(details.get(name))
        state = state_text(detail.get("state") or statuses.get(name, "?"))
        restarts = _cell(detail.get("restarts"))
        processes = _mapping(infos.get(name))
        if not processes:
            table.add_row(name, state, "-", "-", "-", "-", "-", restarts)
            continue
        for index, (pid, info) in enumerate(sorted(processes.items())):
            processes_total += 1
            info = _mapping(info)
            age = info.get("age")
            table.add_row(
                name if index == 0 else "", state if index == 0 else "", str(pid),
                _cell(info.get("cpu")), _cell(info.get("mem")), _cell(info.get("mem_info1")),
                format_duration(age) if isinstance(age, int | float) else "-",
                restarts if index == 0 else "",
            )
    header = Text(f"circus-sd at {endpoint}  {time.strftime('%H:%M:%S', time.localtime(now))}  "
                  f"{len(names)} watchers, {processes_total} processes", style="bold")
    return Group(header, table)


def snapshot(session: Session) -> tuple[RenderableType, int]:
    """The view now, and the exit status it would mean (0, 1 no reply, 3 an error reply)."""
    try:
        status = session.client.call("status", details=True)
        stats = session.client.call("stats")
    except CallError as exc:
        return Text(f"{exc}\n(retrying every {REFRESH_SECONDS:g}s; Ctrl-C to quit)",
                    style="bold red"), 1
    for reply in (status, stats):
        if is_error(reply):
            return Text(error_line(reply), style="bold red"), 3
    return top_view(status, stats, session.endpoint, time.time()), 0


def run_top(session: Session, invocation: Invocation) -> int:
    if invocation.args:
        session.error("top takes no arguments")
        return 2
    out, _ = session.consoles()
    if not session.fancy:
        # Not a terminal: one snapshot, no screen control codes.
        view, status = snapshot(session)
        out.print(view)
        return status
    from rich.live import Live

    try:
        with Live(console=out, auto_refresh=False, screen=True) as live:
            while True:
                live.update(snapshot(session)[0], refresh=True)
                # A display refresh is a timer by nature: nothing to wait on but the clock.
                time.sleep(REFRESH_SECONDS)
    except KeyboardInterrupt:
        pass
    return 0
