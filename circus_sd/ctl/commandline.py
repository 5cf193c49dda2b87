"""circusctl's command line: global options, the command, its switches and arguments (pure).

The switches each command accepts are its registry entry's parameters (the same table the
server dispatches and checks from), so `--help`, the parser and the server cannot disagree.

Start-up time matters (`circusctl status` in a loop is how scripts poll): the registry is
light (no arbiter, no ZMQ); rich and the option table load only where they are needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from circus_sd.client import DEFAULT_TIMEOUT
from circus_sd.control.registry import COMMANDS, Command, Kind, Param, Type, render_usage

SHELLS = ("bash", "zsh", "fish")


class UsageError(Exception):
    """A command line circusctl cannot turn into a request (exit status 2)."""


class ClientCommand(NamedTuple):
    """A command circusctl runs itself rather than sending it to the arbiter."""

    name: str
    doc: str
    params: tuple[Param, ...] = ()

    @property
    def usage(self) -> str:
        return render_usage(self.name, self.params)


QUIET = Param("quiet", Kind.SWITCH, Type.BOOL, short="q")

CLIENT_COMMANDS: dict[str, ClientCommand] = {
    command.name: command
    for command in (
        ClientCommand("listen", "Print the arbiter's events as they happen (`topic json`).",
                      (Param("topics", Kind.WORDS, Type.LIST, metavar="topic"),)),
        ClientCommand("tail", "Show watchers' recent output, then follow it live. The last "
                      "-n N lines (default 10), or those --since a time (-1h, '10 min ago', "
                      "2026-12-02 10:00), come from their file or the journal; --no-follow "
                      "stops there. Each line after `name[wid] ` (--raw: alone); names may be "
                      "globs.",
                      (Param("names", Kind.WORDS, Type.LIST, required=True, metavar="name"),
                       Param("lines", Kind.VALUE, Type.INT, metavar="N", short="n"),
                       Param("since", Kind.VALUE, metavar="time"),
                       Param("stream", Kind.VALUE, choices=("stdout", "stderr")),
                       Param("no_follow", Kind.SWITCH, Type.BOOL),
                       Param("raw", Kind.SWITCH, Type.BOOL))),
        ClientCommand("is-active", "Say whether watchers are active, as systemctl does. One "
                      "word per watcher (active, activating, deactivating, inactive, failed); "
                      "exit 0 if one is active, else 3 (4: none exists).",
                      (Param("names", Kind.WORDS, Type.LIST, required=True, metavar="name"),
                       QUIET)),
        ClientCommand("is-failed", "Say whether watchers have failed, as systemctl does. One "
                      "word per watcher, as is-active; exit 0 if one has failed, else 1 (4: "
                      "none exists).",
                      (Param("names", Kind.WORDS, Type.LIST, required=True, metavar="name"),
                       QUIET)),
        ClientCommand("completion", "Print circusctl's completion script for a shell. "
                      "bash and zsh: `source <(circusctl completion bash)`; fish: "
                      "`circusctl completion fish | source`.",
                      (Param("shell", required=True, choices=SHELLS),)),
        ClientCommand("top", "A live view of watchers and processes (Ctrl-C to quit)."),
        ClientCommand("help", "Help on circusctl or on one command.", (Param("command"),)),
    )
}

# Switches of arbiter commands that only change how circusctl shows the reply (never sent).
DISPLAY_SWITCHES: dict[str, tuple[Param, ...]] = {
    "status": (Param("all", Kind.SWITCH, Type.BOOL),),
}
DISPLAY_NOTES = {
    "status": "On a terminal: one row per watcher (state and reason, processes running of "
              "wanted, uptime, restarts, CPU, memory); with --all (a display switch, never sent), "
              "a row per process too. Elsewhere, Circus's lines.",
}


def option_name(text: str) -> str:
    """`graceful-timeout` and `graceful_timeout` are the same switch (Circus spells the latter)."""
    return text.replace("-", "_")


def switches(params: Sequence[Param]) -> dict[str, Param]:
    """The switches among `params`, by the name the parser files their value under."""
    return {
        option_name(param.switch): param
        for param in params
        if param.kind is Kind.SWITCH or param.kind is Kind.VALUE
    }


def command_flags(command: Command) -> dict[str, Param]:
    """The switches of a registry command; `--waiting` if it is waitable."""
    return switches(command.parameters)


FlagValues = dict[str, str | bool]


class GlobalOptions:
    """circusctl's own options (Circus's set, plus --pubsub-endpoint)."""

    def __init__(self, endpoint: str | None = None, pubsub_endpoint: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, json: bool = False, prettify: bool = False,
                 help: bool = False, version: bool = False) -> None:
        self.endpoint = endpoint
        self.pubsub_endpoint = pubsub_endpoint
        self.timeout = timeout
        self.json = json
        self.prettify = prettify
        self.help = help
        self.version = version

    def copy(self) -> GlobalOptions:
        return GlobalOptions(**vars(self))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GlobalOptions) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"GlobalOptions({vars(self)!r})"


class Invocation:
    """What the command line asks: global options, then a command with its flags and args."""

    def __init__(self, options: GlobalOptions, command: str | None = None,
                 args: list[str] | None = None, flags: FlagValues | None = None) -> None:
        self.options = options
        self.command = command
        self.args = args if args is not None else []
        self.flags = flags if flags is not None else {}

    def __repr__(self) -> str:
        return (f"Invocation({self.options!r}, {self.command!r}, args={self.args!r}, "
                f"flags={self.flags!r})")


_GLOBAL_VALUES = ("endpoint", "pubsub_endpoint", "timeout")
_GLOBAL_SWITCHES = ("json", "prettify", "help", "version")


def _set_global(options: GlobalOptions, name: str, value: str) -> None:
    if name == "timeout":
        try:
            timeout = float(value)
        except ValueError:
            raise UsageError(f"--timeout: expected a number of seconds, got {value!r}") from None
        if not timeout > 0:
            raise UsageError(f"--timeout: expected a positive number, got {value!r}")
        options.timeout = timeout
    else:
        setattr(options, name, value)


def flags_of(command: str | None) -> dict[str, Param]:
    """The switches a command (the arbiter's or circusctl's own) accepts."""
    if command is None:
        return {}
    if command in CLIENT_COMMANDS:
        return switches(CLIENT_COMMANDS[command].params)
    if command not in COMMANDS:
        return {}
    return {**command_flags(COMMANDS[command]), **switches(DISPLAY_SWITCHES.get(command, ()))}


def _short_option(token: str, command: str | None) -> tuple[str, str | None] | None:
    """`-n 3`, `-n3`, `-q`: (the switch's name, the value attached) if `token` spells one."""
    if len(token) < 2 or token[0] != "-" or token[1] == "-" or not token[1].isalpha():
        return None
    for name, param in flags_of(command).items():
        if param.short == token[1]:
            attached = token[2:] or None
            return name, attached
    return None


def parse_argv(argv: Sequence[str], defaults: GlobalOptions | None = None) -> Invocation:
    """Parse `[global options] command [args and switches]`.

    Global options are accepted anywhere (Circus wants them first; being lenient costs
    nothing as no command switch shares their names); a command's switches come after it.
    `--` ends the options: what follows is taken literally (e.g. a `set` value "--x").
    """
    invocation = Invocation(defaults.copy() if defaults else GlobalOptions())
    options = invocation.options
    tokens = list(argv)
    literal = False
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not literal and token == "--":
            literal = True
            continue
        short = None if literal else _short_option(token, invocation.command)
        is_option = not literal and (token == "-h" or (token.startswith("--") and len(token) > 2))
        if short is not None:
            short_name, attached = short
            flag = flags_of(invocation.command)[short_name]
            if flag.kind is Kind.VALUE and attached is None:
                if index >= len(tokens):
                    raise UsageError(f"{token} needs a value")
                attached = tokens[index]
                index += 1
            invocation.flags[short_name] = _flag_value(invocation.command, flag, attached)
            continue
        if not is_option:
            if invocation.command is None:
                invocation.command = token.lower()
            else:
                invocation.args.append(token)
            continue
        raw_name, has_value, inline_value = token[2:].partition("=")
        name = "help" if token == "-h" else option_name(raw_name)
        value: str | None = inline_value if has_value else None
        is_global = name in _GLOBAL_VALUES or name in _GLOBAL_SWITCHES
        flags = {} if is_global else flags_of(invocation.command)
        takes_value = name in _GLOBAL_VALUES or (name in flags and flags[name].kind is Kind.VALUE)
        if takes_value and value is None:
            if index >= len(tokens):
                raise UsageError(f"{token} needs a value")
            value = tokens[index]
            index += 1
        if name in _GLOBAL_VALUES:
            assert value is not None
            _set_global(options, name, value)
        elif name in _GLOBAL_SWITCHES:
            if value is not None:
                raise UsageError(f"--{name} takes no value")
            setattr(options, name, True)
        elif name in ("ssh", "ssh_keyfile"):
            raise UsageError(f"--{raw_name} is not supported: reach a remote arbiter through an "
                             "ssh tunnel to its socket (ssh -L)")
        elif name in flags:
            invocation.flags[name] = _flag_value(invocation.command, flags[name], value)
        elif invocation.command is None:
            raise UsageError(f"unknown option {token}")
        else:
            raise UsageError(f"{invocation.command}: unknown option {token}")
    return invocation


def _flag_value(command: str | None, flag: Param, value: str | None) -> str | bool:
    if flag.kind is Kind.SWITCH:
        if value is not None:
            raise UsageError(f"{command}: --{flag.switch} takes no value")
        return True
    assert value is not None
    if flag.choices and value not in flag.choices:
        raise UsageError(
            f"{command}: --{flag.switch} must be one of {', '.join(flag.choices)}, got {value!r}"
        )
    return value


# -- help ----------------------------------------------------------------------------------------

PROG = "circusctl"

GLOBAL_HELP = """\
options:
  --endpoint ENDPOINT         control endpoint (default: $CIRCUSCTL_ENDPOINT, else {endpoint})
  --pubsub-endpoint ENDPOINT  events endpoint for `listen` (default: asked from the arbiter)
  --timeout SECONDS           how long to wait for a reply (default: {timeout:g})
  --json                      print the raw JSON reply
  --prettify                  print the JSON reply indented and sorted (implies --json)
  --help, -h                  this help; `circusctl help <command>` for a command's
  --version                   print circusctl's version

exit status: 0 ok, 3 the arbiter answered with an error, 1 no answer (not running, timed out),
2 a usage error. Without a command, circusctl starts an interactive shell.
"""


def usage_line() -> str:
    return f"usage: {PROG} [options] <command> [args]"


def general_help(default_endpoint: str) -> str:
    rows = [(name, command.doc) for name, command in COMMANDS.items()]
    rows += [(name, command.doc) for name, command in CLIENT_COMMANDS.items()]
    width = max(len(name) for name, _ in rows)
    lines = [usage_line(), "", "Controls a circus-sd (or Circus) arbiter.", "", "commands:"]
    lines += [f"  {name:<{width}}  {doc}" for name, doc in sorted(rows)]
    lines += ["", GLOBAL_HELP.format(endpoint=default_endpoint, timeout=DEFAULT_TIMEOUT)]
    return "\n".join(lines).rstrip() + "\n"


def command_help(name: str) -> str:
    """`usage: circusctl <usage>` and the doc, from the registry; UsageError if unknown."""
    entry: Command | ClientCommand
    if name in COMMANDS:
        entry = COMMANDS[name]
    elif name in CLIENT_COMMANDS:
        entry = CLIENT_COMMANDS[name]
    else:
        raise UsageError(f"unknown command {name!r} (see `{PROG} --help`)")
    lines = [f"usage: {PROG} {entry.usage}", "", entry.doc]
    if not isinstance(entry, ClientCommand) and entry.waitable:
        lines += ["", "Replies at once; with --waiting, when the operation is done."]
    if name in DISPLAY_NOTES:
        lines += ["", DISPLAY_NOTES[name]]
    return "\n".join(lines) + "\n"


def known_commands() -> list[str]:
    return sorted([*COMMANDS, *CLIENT_COMMANDS])
