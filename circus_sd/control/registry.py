"""Every control command, declared once: name, access tier, typed parameters, help.

The server's dispatch and property checks (handlers.py, param_checks.py), circusctl's parser,
its help, the man page and the bash completion are all derived from this table. It imports
nothing heavy (no arbiter, no ZMQ, no handlers): circusctl loads it on every run.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from circus_sd.access import Tier

__all__ = ["COMMANDS", "Command", "Kind", "Param", "Tier", "Type", "render_usage"]


class Kind(enum.Enum):
    """How circusctl takes a parameter from its command line."""

    ARGUMENT = "argument"  # one word: `<name>`, or `[<name>]` if not required
    REST = "rest"  # the rest of the line joined by spaces (add's `<cmd>`, unquoted)
    WORDS = "words"  # the remaining words, as a list: `<key> [<key> ...]`
    OPTION_PAIRS = "option pairs"  # `<key> <value> ...`: watcher options, typed by their parser
    SWITCH = "switch"  # `[--name]`
    VALUE = "value"  # `[--name <metavar>]`
    WIRE = "wire"  # not on circusctl's line: other clients (Circus's, plugins) send it


POSITIONAL = frozenset({Kind.ARGUMENT, Kind.REST, Kind.WORDS, Kind.OPTION_PAIRS})
# Positionals that take every word left: only the last positional may be one.
VARIADIC = frozenset({Kind.REST, Kind.WORDS, Kind.OPTION_PAIRS})


class Type(enum.Enum):
    """What a parameter's value is on the wire (JSON)."""

    STR = "string"
    INT = "integer"
    SECONDS = "number of seconds"
    BOOL = "boolean"
    SIGNAL = "signal"  # a number, or a name (HUP, SIGTERM)
    OBJECT = "JSON object"
    LIST = "list"
    ANY = "any"


# NamedTuples rather than dataclasses: making a dataclass costs circusctl a millisecond each.
class Param(NamedTuple):
    """One request property: its name on the wire, how circusctl takes it, its type.

    `default` is what circusctl sends for a SWITCH not given (None: nothing); a given switch
    sends the opposite, or true. So reload's `graceful` is `--terminate`, always sent.
    """

    name: str
    kind: Kind = Kind.ARGUMENT
    type: Type = Type.STR
    required: bool = False
    metavar: str = ""  # the word in the usage line; the name if empty
    flag: str = ""  # the switch as typed, without `--`; the name with `-` for `_` if empty
    choices: tuple[str, ...] = ()
    default: bool | None = None
    short: str = ""  # a one-letter spelling, `-n`, beside the long one (tail's `-n N`)

    @property
    def word(self) -> str:
        return self.metavar or self.name

    @property
    def switch(self) -> str:
        return self.flag or self.name.replace("_", "-")


class Command(NamedTuple):
    """A control command: who may run it, what it takes, what it does."""

    name: str
    tier: Tier
    doc: str
    # In the order the usage line shows them.
    params: tuple[Param, ...] = ()
    # Circus's asynchronous commands: reply "ok" at once unless properties.waiting is true.
    # They take --waiting, shown in the usage line only where `params` places it.
    waitable: bool = False

    @property
    def parameters(self) -> tuple[Param, ...]:
        """Every parameter, the implied `waiting` of a waitable command included."""
        if self.waitable and all(param.name != "waiting" for param in self.params):
            return (*self.params, WAITING)
        return self.params

    @property
    def usage(self) -> str:
        return render_usage(self.name, self.params)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(param.name for param in self.params if param.required)


def render_usage(command: str, params: tuple[Param, ...]) -> str:
    """`name` and its parameters as circusctl takes them: `incr <name> [<nb>] [--waiting]`."""
    words = [command]
    for param in params:
        word = param.word
        if param.kind is Kind.ARGUMENT or param.kind is Kind.REST:
            text = f"<{word}>"
        elif param.kind is Kind.WORDS:
            text = f"<{word}> [<{word}> ...]" if param.required else f"[<{word}> ...]"
        elif param.kind is Kind.OPTION_PAIRS:
            pair = " ".join(f"<{part}>" for part in word.split())
            text = f"{pair} [{pair} ...]"
        elif param.kind is Kind.SWITCH:
            text = f"--{param.switch}"
        elif param.kind is Kind.VALUE:
            spelled = f"-{param.short}|--{param.switch}" if param.short else f"--{param.switch}"
            text = f"{spelled} " + ("|".join(param.choices) or f"<{word}>")
        else:
            continue  # Kind.WIRE
        words.append(text if param.required or param.kind is Kind.WORDS else f"[{text}]")
    return " ".join(words)


NAME = Param("name", required=True)
OPTIONAL_NAME = Param("name")
WAITING = Param("waiting", Kind.SWITCH, Type.BOOL)
MATCH = Param("match", Kind.VALUE, choices=("simple", "glob", "regex"))
PID = Param("pid", type=Type.INT)


def _lifecycle(name: str, doc: str) -> Command:
    return Command(name, Tier.OPERATE, doc, (OPTIONAL_NAME, WAITING, MATCH), waitable=True)


def _switch(name: str, flag: str = "", default: bool | None = None) -> Param:
    return Param(name, Kind.SWITCH, Type.BOOL, flag=flag, default=default)


_ALL = [
    Command(
        "add",
        Tier.ADMIN,
        "Add a watcher (and start it with --start).",
        (
            _switch("start", default=False),
            NAME,
            Param("cmd", Kind.REST, required=True),
            Param("args", Kind.WIRE, Type.ANY),  # text or a list of words
            Param("options", Kind.WIRE, Type.OBJECT),
        ),
        waitable=True,
    ),
    Command(
        "rm",
        Tier.ADMIN,
        "Stop and remove a watcher.",
        (NAME, _switch("nostop"), WAITING),
        waitable=True,
    ),
    _lifecycle("start", "Start a watcher, or all of them."),
    _lifecycle("stop", "Stop a watcher, or all of them."),
    _lifecycle("restart", "Restart a watcher, or all of them."),
    Command(
        "reload",
        Tier.OPERATE,
        "Replace a watcher's processes (all watchers without a name), new before old.",
        (
            OPTIONAL_NAME,
            # Circus's circusctl always sends `graceful`.
            _switch("graceful", flag="terminate", default=True),
            WAITING,
            _switch("sequential"),
        ),
        waitable=True,
    ),
    Command(
        "reloadconfig",
        Tier.ADMIN,
        "Re-read the configuration file and apply changes.",
        (WAITING,),
        waitable=True,
    ),
    Command("quit", Tier.ADMIN, "Stop every watcher, then the arbiter.", (WAITING,),
            waitable=True),
    Command(
        "reexec",
        Tier.ADMIN,
        "Re-execute the arbiter in place with the installed circus-sd (a live upgrade): every "
        "process keeps running, nothing is restarted. Refused, with the reason, if the "
        "installed circus-sd cannot take over the running state.",
    ),
    Command("list", Tier.READ, "List the watchers, or a watcher's pids.", (OPTIONAL_NAME,)),
    Command("listsockets", Tier.READ, "List the sockets."),
    Command(
        "status",
        Tier.READ,
        "Status of a watcher, or of all of them; with --details, each one's state, pids, "
        "restarts, reason and start time (and readiness).",
        (OPTIONAL_NAME, _switch("details")),
    ),
    Command(
        "numprocesses",
        Tier.READ,
        "Number of processes of a watcher, or in all.",
        (OPTIONAL_NAME,),
    ),
    Command("numwatchers", Tier.READ, "Number of watchers."),
    Command(
        "incr",
        Tier.OPERATE,
        "Add processes to a watcher.",
        (NAME, Param("nb", type=Type.INT), WAITING),
        waitable=True,
    ),
    Command(
        "decr",
        Tier.OPERATE,
        "Remove processes from a watcher.",
        (NAME, Param("nb", type=Type.INT), WAITING),
        waitable=True,
    ),
    Command(
        "get",
        Tier.READ,
        "Values of some options of a watcher.",
        (NAME, Param("keys", Kind.WORDS, Type.LIST, required=True, metavar="key")),
    ),
    Command(
        "set",
        Tier.OPERATE,
        "Change options of a watcher (some need the admin tier).",
        (
            NAME,
            Param("options", Kind.OPTION_PAIRS, Type.OBJECT, required=True,
                  metavar="key value"),
            WAITING,
        ),
        waitable=True,
    ),
    Command("options", Tier.READ, "All options of a watcher.", (NAME,)),
    Command(
        "globaloptions",
        Tier.READ,
        "The arbiter's options.",
        (Param("option", metavar="key"),),
    ),
    Command(
        "signal",
        Tier.OPERATE,
        "Send a signal to a watcher's processes.",
        (
            NAME,
            PID,
            _switch("children"),
            _switch("recursive"),
            Param("signum", type=Type.SIGNAL, required=True),
            # A descendant of a process: Circus reads `childpid`, its docs say `child_pid`.
            Param("childpid", Kind.WIRE, Type.INT),
            Param("child_pid", Kind.WIRE, Type.INT),
        ),
    ),
    Command(
        "kill",
        Tier.OPERATE,
        "Stop processes of a watcher with a signal, then SIGKILL after a timeout.",
        (
            NAME,
            PID,
            Param("signum", Kind.VALUE, Type.SIGNAL, metavar="sig"),
            Param("graceful_timeout", Kind.VALUE, Type.SECONDS, metavar="s"),
        ),
        waitable=True,
    ),
    Command(
        "stats",
        Tier.READ,
        "Process statistics (cpu, memory, age).",
        (_switch("extended"), OPTIONAL_NAME, Param("process", type=Type.INT, metavar="pid")),
    ),
    Command("dstats", Tier.READ, "Statistics of the arbiter itself."),
    Command(
        "publish",
        Tier.OPERATE,
        "Publish an event `plugin.<name>.<event>` (how plugins announce what they do).",
        (NAME, Param("event", required=True),
         Param("data", type=Type.OBJECT, metavar="json object")),
    ),
    Command("freeze", Tier.OPERATE, "Freeze every process of a watcher (cgroup.freeze).",
            (NAME,)),
    Command("thaw", Tier.OPERATE, "Thaw a frozen watcher.", (NAME,)),
    Command("ipython", Tier.ADMIN, "Not supported by circus-sd."),
]

COMMANDS: dict[str, Command] = {command.name: command for command in _ALL}
