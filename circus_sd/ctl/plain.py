"""Circus's plain output of each reply (its `console_msg`), for scripts reading circusctl (pure).

Scripts parse these lines (`web: active`, `12,13`, `3`), so they follow Circus 0.19 byte for
byte, with two of its bugs fixed: an error reply to `status NAME` printed just "error", and one to
`globaloptions` printed the reason without "error: ".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Reply = Mapping[str, Any]

# circus/commands/stats.py and dstats.py: one line per process.
INFO_FIELDS = ("pid", "cmdline", "username", "nice", "mem_info1", "mem_info2", "cpu", "mem",
               "ctime")


def is_error(reply: Reply) -> bool:
    # Not `!= "ok"`: a `status NAME` reply carries the watcher's status in that key.
    return reply.get("status") == "error"


def error_line(reply: Reply) -> str:
    return f"error: {reply.get('reason')}"


def option_text(key: str, value: Any) -> str:
    """Circus's `convert_opt`: env as `K=V,K=V`, None as empty, anything else as `str()`."""
    if key == "env":
        return ",".join(f"{k}={v}" for k, v in (value or {}).items())
    return "" if value is None else str(value)


def info_line(info: Any) -> str:
    if not isinstance(info, Mapping):
        return str(info)  # "No such process (stopped?)"
    fields = [str(info.get(name, "N/A")) for name in INFO_FIELDS]
    # Circus's _INFOLINE has two spaces after the pid.
    return f"{fields[0]}  " + " ".join(fields[1:])


def _info_with_children(info: Any) -> str:
    if not isinstance(info, Mapping):
        return str(info)
    lines = [info_line(info)]
    lines += ["   " + info_line(child) for child in info.get("children") or []]
    return "\n".join(lines)


def _ok(reply: Reply) -> str:
    return "ok"


def _status(reply: Reply) -> str:
    if "statuses" in reply:
        statuses = reply["statuses"] or {}
        return "\n".join(f"{name}: {statuses[name]}" for name in sorted(statuses))
    return str(reply.get("status"))


def _list(reply: Reply) -> str:
    if "pids" in reply:
        return ",".join(str(pid) for pid in reply["pids"])
    if "watchers" in reply:
        return ",".join(reply["watchers"])
    return "error: Response doesn't contain 'pids' nor 'watchers'."


def _listsockets(reply: Reply) -> str:
    lines = []
    for sock in reply.get("sockets") or []:
        where = sock.get("path") if "path" in sock else f"{sock.get('host')}:{sock.get('port')}"
        lines.append(f"{sock.get('fd')}:socket '{sock.get('name')}' at {where}")
    return "\n".join(lines)


def _number_of(key: str) -> Callable[[Reply], str]:
    def format_(reply: Reply) -> str:
        return str(reply.get(key))

    return format_


def _incr_decr(reply: Reply) -> str:
    if "singleton" in reply:
        return "This watcher is a Singleton - not changing the number of processes"
    return str(reply.get("numprocesses", "ok"))


def _options(reply: Reply) -> str:
    options = reply.get("options") or {}
    return "\n".join(f"{key}: {option_text(key, value)}" for key, value in options.items())


def _stats(reply: Reply) -> str:
    if "name" in reply:
        lines = [f"{reply['name']}:"]
        lines += [f"{pid}: {_info_with_children(info)}"
                  for pid, info in (reply.get("info") or {}).items()]
        return "\n".join(lines)
    if "infos" in reply:
        lines = []
        for watcher, processes in (reply.get("infos") or {}).items():
            lines.append(f"{watcher}:")
            lines += [f"{pid}: {_info_with_children(info)}"
                      for pid, info in (processes or {}).items()]
        return "\n".join(lines)
    return f"{reply.get('process')}: {_info_with_children(reply.get('info'))}\n"


def _dstats(reply: Reply) -> str:
    info = reply.get("info")
    if not isinstance(info, Mapping):
        return str(info)
    lines = ["Main Process:", "    " + info_line(info)]
    children = info.get("children") or []
    if children:
        lines.append("Children:")
        lines += ["    " + info_line(child) for child in children]
    return "\n".join(lines)


def _ipython(reply: Reply) -> str:
    # Only a Circus arbiter with IPython answers ok; circus-sd answers an error.
    if not reply.get("shell"):
        return "error: Could not start ipython kernel"
    return f"an IPython kernel runs in the arbiter: jupyter console --existing {reply.get('shell')}"


FORMATTERS: dict[str, Callable[[Reply], str]] = {
    "status": _status,
    "list": _list,
    "listsockets": _listsockets,
    "numprocesses": _number_of("numprocesses"),
    "numwatchers": _number_of("numwatchers"),
    "incr": _incr_decr,
    "decr": _incr_decr,
    "get": _options,
    "options": _options,
    "globaloptions": _options,
    "stats": _stats,
    "dstats": _dstats,
    "ipython": _ipython,
}


def format_reply(command: str, reply: Reply) -> str:
    """What Circus's circusctl prints for this reply (without the final newline)."""
    if is_error(reply):
        return error_line(reply)
    return FORMATTERS.get(command, _ok)(reply)
