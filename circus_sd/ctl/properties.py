"""circusctl arguments -> request properties, one builder per command, as Circus's `message()`.

Pure: `build_properties("incr", ["web", "2"], {"waiting": True})` is
`{"name": "web", "nb": 2, "waiting": True}`. Switches not given are left out (the arbiter applies
Circus's defaults), except `reload`'s `graceful`, which Circus always sends.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from circus_sd.ctl.commandline import FlagValues, UsageError

Properties = dict[str, Any]
Builder = Callable[[list[str], FlagValues], Properties]


def _count(command: str, args: list[str], low: int, high: int | None, usage: str) -> None:
    if len(args) < low or (high is not None and len(args) > high):
        raise UsageError(f"{command}: wrong number of arguments (usage: {command} {usage})")


def _integer(command: str, what: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"{command}: {what} must be an integer, got {raw!r}") from None


def _number(command: str, what: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise UsageError(f"{command}: {what} must be a number, got {raw!r}") from None


def signal_value(raw: str) -> int | str:
    """A signal as typed: a number is sent as an int, a name (HUP, SIGTERM) as is."""
    return int(raw) if raw.isdecimal() else raw


def _switches(flags: FlagValues, *names: str) -> Properties:
    """The given switches that are on (a switch not given is not sent)."""
    return {name: True for name in names if flags.get(name) is True}


def _optional_name(command: str, switches: tuple[str, ...] = ("waiting",)) -> Builder:
    def build(args: list[str], flags: FlagValues) -> Properties:
        _count(command, args, 0, 1, "[<name>]")
        props: Properties = {"name": args[0]} if args else {}
        props.update(_switches(flags, *switches))
        if isinstance(flags.get("match"), str):
            props["match"] = flags["match"]
        return props

    return build


def _name_only(command: str) -> Builder:
    def build(args: list[str], flags: FlagValues) -> Properties:
        _count(command, args, 1, 1, "<name>")
        return {"name": args[0]}

    return build


def _no_args(command: str, switches: tuple[str, ...] = ()) -> Builder:
    def build(args: list[str], flags: FlagValues) -> Properties:
        _count(command, args, 0, 0, "")
        return _switches(flags, *switches)

    return build


def _add(args: list[str], flags: FlagValues) -> Properties:
    _count("add", args, 2, None, "[--start] <name> <cmd>")
    # Circus joins the rest of the line: `add web python -m http.server` works unquoted.
    props: Properties = {"name": args[0], "cmd": " ".join(args[1:]),
                         "start": flags.get("start") is True}
    props.update(_switches(flags, "waiting"))
    return props


def _rm(args: list[str], flags: FlagValues) -> Properties:
    _count("rm", args, 1, 1, "<name> [--nostop] [--waiting]")
    # Circus's own circusctl drops these two switches (a bug); they are sent here.
    return {"name": args[0], **_switches(flags, "nostop", "waiting")}


def _reload(args: list[str], flags: FlagValues) -> Properties:
    _count("reload", args, 0, 1, "[<name>] [--terminate] [--waiting] [--sequential]")
    props: Properties = {"name": args[0]} if args else {}
    props["graceful"] = flags.get("terminate") is not True
    props.update(_switches(flags, "waiting", "sequential"))
    return props


def _incr_decr(command: str) -> Builder:
    def build(args: list[str], flags: FlagValues) -> Properties:
        _count(command, args, 1, 2, "<name> [<nb>] [--waiting]")
        props: Properties = {"name": args[0]}
        if len(args) == 2:
            props["nb"] = _integer(command, "<nb>", args[1])
        props.update(_switches(flags, "waiting"))
        return props

    return build


def _get(args: list[str], flags: FlagValues) -> Properties:
    _count("get", args, 2, None, "<name> <key> [<key> ...]")
    return {"name": args[0], "keys": args[1:]}


def _set(args: list[str], flags: FlagValues) -> Properties:
    _count("set", args, 3, None, "<name> <key> <value> [<key> <value> ...]")
    pairs = args[1:]
    if len(pairs) % 2:
        raise UsageError("set: the keys and values must come in pairs")
    options = {
        pairs[i].lower(): set_value(pairs[i].lower(), pairs[i + 1])
        for i in range(0, len(pairs), 2)
    }
    return {"name": args[0], "options": options, **_switches(flags, "waiting")}


def _globaloptions(args: list[str], flags: FlagValues) -> Properties:
    _count("globaloptions", args, 0, 1, "[<key>]")
    return {"option": args[0]} if args else {}


def _signal(args: list[str], flags: FlagValues) -> Properties:
    _count("signal", args, 2, 3, "<name> [<pid>] [--children] [--recursive] <signum>")
    props: Properties = {"name": args[0], "signum": signal_value(args[-1])}
    if len(args) == 3:
        props["pid"] = _integer("signal", "<pid>", args[1])
    props.update(_switches(flags, "children", "recursive"))
    return props


def _kill(args: list[str], flags: FlagValues) -> Properties:
    _count("kill", args, 1, 2, "<name> [<pid>] [--signum <sig>] [--graceful-timeout <s>]")
    props: Properties = {"name": args[0]}
    if len(args) == 2:
        props["pid"] = _integer("kill", "<pid>", args[1])
    signum = flags.get("signum")
    if isinstance(signum, str):
        props["signum"] = signal_value(signum)
    graceful_timeout = flags.get("graceful_timeout")
    if isinstance(graceful_timeout, str):
        props["graceful_timeout"] = _number("kill", "--graceful-timeout", graceful_timeout)
    props.update(_switches(flags, "waiting"))
    return props


def _stats(args: list[str], flags: FlagValues) -> Properties:
    _count("stats", args, 0, 2, "[--extended] [<name>] [<pid>]")
    props: Properties = {}
    if args:
        props["name"] = args[0]
    if len(args) == 2:
        props["process"] = _integer("stats", "<pid>", args[1])
    props.update(_switches(flags, "extended"))
    return props


def _publish(args: list[str], flags: FlagValues) -> Properties:
    _count("publish", args, 2, 3, "<name> <event> [<json object>]")
    props: Properties = {"name": args[0], "event": args[1]}
    if len(args) == 3:
        try:
            data = json.loads(args[2])
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise UsageError(f"publish: the data must be a JSON object, got {args[2]!r}")
        props["data"] = data
    return props


BUILDERS: dict[str, Builder] = {
    "add": _add,
    "rm": _rm,
    "start": _optional_name("start"),
    "stop": _optional_name("stop"),
    "restart": _optional_name("restart"),
    "reload": _reload,
    "reloadconfig": _no_args("reloadconfig", ("waiting",)),
    "quit": _no_args("quit", ("waiting",)),
    "list": _optional_name("list", ()),
    "listsockets": _no_args("listsockets"),
    "status": _optional_name("status", ("details",)),
    "numprocesses": _optional_name("numprocesses", ()),
    "numwatchers": _no_args("numwatchers"),
    "incr": _incr_decr("incr"),
    "decr": _incr_decr("decr"),
    "get": _get,
    "set": _set,
    "options": _name_only("options"),
    "globaloptions": _globaloptions,
    "signal": _signal,
    "kill": _kill,
    "stats": _stats,
    "dstats": _no_args("dstats"),
    "freeze": _name_only("freeze"),
    "thaw": _name_only("thaw"),
    "ipython": _no_args("ipython"),
    "publish": _publish,
}


def build_properties(command: str, args: list[str], flags: FlagValues) -> Properties:
    """The request properties for a command line; an unknown command must have no arguments."""
    builder = BUILDERS.get(command)
    if builder is None:
        # Sent as is so that the arbiter says what it thinks of it (exit 3).
        if args:
            raise UsageError(f"unknown command {command!r}: cannot tell what its arguments mean")
        return {}
    return builder(args, flags)


# -- `set` values --------------------------------------------------------------------------------

# Numbers whose text means more than the number: the arbiter reads them itself.
_SENT_AS_TEXT = frozenset({"uid", "gid", "umask"})


def set_value(key: str, raw: str) -> Any:
    """A `set` value typed as the option's own parser types it (Circus's `convert_option`).

    Booleans, integers, numbers and signals are sent typed (a Circus arbiter refuses "3" for
    numprocesses); `env` as an object from `A=1,B=2`; everything else as the text given.
    """
    if key == "env":
        return _parse_env(raw)
    if key in _SENT_AS_TEXT:
        return raw
    if key.startswith("rlimit_"):
        return int(raw) if raw.isdecimal() else raw
    # The option table is only needed here: keep it out of every other command's start-up.
    from circus_sd.config.model import WatcherConfig
    from circus_sd.config.options import options_of

    known = options_of(WatcherConfig)
    if key not in known:
        return raw
    try:
        value = known[key][1].parse(raw)
    except ValueError as exc:
        raise UsageError(f"set: {key}: {exc}") from None
    return value if isinstance(value, bool | int | float) else raw


def _parse_env(raw: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"set: env: expected KEY=VALUE[,KEY=VALUE...], got {raw!r}")
        env[key.strip()] = value.strip()
    return env
