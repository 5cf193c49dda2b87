"""Every control command, declared once: name, access tier, waiting semantics, usage and help.

The server's dispatch (handlers.py) and circusctl's parser and help are both built from this
table; it imports nothing heavy, so circusctl starts fast.
"""

from __future__ import annotations

import dataclasses

from circus_sd.access import Tier

__all__ = ["COMMANDS", "Command", "Tier"]


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    tier: Tier
    doc: str
    usage: str = ""
    required: tuple[str, ...] = ()
    # Circus's asynchronous commands: reply "ok" at once unless properties.waiting is true.
    waitable: bool = False


_ALL = [
    Command(
        "add",
        Tier.ADMIN,
        "Add a watcher (and start it with --start).",
        "add [--start] <name> <cmd>",
        ("name", "cmd"),
        waitable=True,
    ),
    Command(
        "rm",
        Tier.ADMIN,
        "Stop and remove a watcher.",
        "rm <name> [--nostop] [--waiting]",
        ("name",),
        waitable=True,
    ),
    Command(
        "start",
        Tier.OPERATE,
        "Start a watcher, or all of them.",
        "start [<name>] [--waiting] [--match simple|glob|regex]",
        waitable=True,
    ),
    Command(
        "stop",
        Tier.OPERATE,
        "Stop a watcher, or all of them.",
        "stop [<name>] [--waiting] [--match simple|glob|regex]",
        waitable=True,
    ),
    Command(
        "restart",
        Tier.OPERATE,
        "Restart a watcher, or all of them.",
        "restart [<name>] [--waiting] [--match simple|glob|regex]",
        waitable=True,
    ),
    Command(
        "reload",
        Tier.OPERATE,
        "Replace a watcher's processes (all watchers without a name), new before old.",
        "reload [<name>] [--terminate] [--waiting] [--sequential]",
        waitable=True,
    ),
    Command(
        "reloadconfig",
        Tier.ADMIN,
        "Re-read the configuration file and apply changes.",
        "reloadconfig [--waiting]",
        waitable=True,
    ),
    Command(
        "quit",
        Tier.ADMIN,
        "Stop every watcher, then the arbiter.",
        "quit [--waiting]",
        waitable=True,
    ),
    Command("list", Tier.READ, "List the watchers, or a watcher's pids.", "list [<name>]"),
    Command("listsockets", Tier.READ, "List the sockets.", "listsockets"),
    Command("status", Tier.READ, "Status of a watcher, or of all of them; with --details, "
            "each one's state, pids, restarts, reason and start time (and readiness).",
            "status [<name>] [--details]"),
    Command(
        "numprocesses",
        Tier.READ,
        "Number of processes of a watcher, or in all.",
        "numprocesses [<name>]",
    ),
    Command("numwatchers", Tier.READ, "Number of watchers.", "numwatchers"),
    Command(
        "incr",
        Tier.OPERATE,
        "Add processes to a watcher.",
        "incr <name> [<nb>] [--waiting]",
        ("name",),
        waitable=True,
    ),
    Command(
        "decr",
        Tier.OPERATE,
        "Remove processes from a watcher.",
        "decr <name> [<nb>] [--waiting]",
        ("name",),
        waitable=True,
    ),
    Command(
        "get",
        Tier.READ,
        "Values of some options of a watcher.",
        "get <name> <key> [<key> ...]",
        ("name", "keys"),
    ),
    Command(
        "set",
        Tier.OPERATE,
        "Change options of a watcher (some need the admin tier).",
        "set <name> <key> <value> [<key> <value> ...] [--waiting]",
        ("name", "options"),
        waitable=True,
    ),
    Command("options", Tier.READ, "All options of a watcher.", "options <name>", ("name",)),
    Command("globaloptions", Tier.READ, "The arbiter's options.", "globaloptions [<key>]"),
    Command(
        "signal",
        Tier.OPERATE,
        "Send a signal to a watcher's processes.",
        "signal <name> [<pid>] [--children] [--recursive] <signum>",
        ("name", "signum"),
    ),
    Command(
        "kill",
        Tier.OPERATE,
        "Stop processes of a watcher with a signal, then SIGKILL after a timeout.",
        "kill <name> [<pid>] [--signum <sig>] [--graceful-timeout <s>]",
        ("name",),
        waitable=True,
    ),
    Command(
        "stats",
        Tier.READ,
        "Process statistics (cpu, memory, age).",
        "stats [--extended] [<name>] [<pid>]",
    ),
    Command("dstats", Tier.READ, "Statistics of the arbiter itself.", "dstats"),
    Command(
        "publish",
        Tier.OPERATE,
        "Publish an event `plugin.<name>.<event>` (how plugins announce what they do).",
        "publish <name> <event> [<json object>]",
        ("name", "event"),
    ),
    Command("freeze", Tier.OPERATE, "Freeze every process of a watcher (cgroup.freeze).",
            "freeze <name>", ("name",)),
    Command("thaw", Tier.OPERATE, "Thaw a frozen watcher.", "thaw <name>", ("name",)),
    Command("ipython", Tier.ADMIN, "Not supported by circus-sd.", "ipython"),
]

COMMANDS: dict[str, Command] = {command.name: command for command in _ALL}
