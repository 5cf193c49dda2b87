"""circusctl arguments -> request properties, derived from the command's registry parameters.

Pure: `build_properties("incr", ["web", "2"], {"waiting": True})` is
`{"name": "web", "nb": 2, "waiting": True}`. Switches not given are left out (the arbiter applies
Circus's defaults), except those declaring a `default` (add's `start`, reload's `graceful`),
which Circus's client always sends.
"""

from __future__ import annotations

import json
from typing import Any

from circus_sd.control.registry import COMMANDS, POSITIONAL, VARIADIC, Command, Kind, Param, Type
from circus_sd.ctl.commandline import FlagValues, UsageError, command_flags

Properties = dict[str, Any]


def build_properties(command: str, args: list[str], flags: FlagValues) -> Properties:
    """The request properties for a command line; an unknown command must have no arguments."""
    entry = COMMANDS.get(command)
    if entry is None:
        # Sent as is so that the arbiter says what it thinks of it (exit 3).
        if args:
            raise UsageError(f"unknown command {command!r}: cannot tell what its arguments mean")
        return {}
    props = _positionals(entry, args)
    for key, param in command_flags(entry).items():
        given = flags.get(key)
        if param.kind is Kind.SWITCH:
            if given is True:
                props[param.name] = True if param.default is None else not param.default
            elif param.default is not None:
                props[param.name] = param.default
        elif isinstance(given, str):
            props[param.name] = _typed(command, param, f"--{param.switch}", given)
    return props


def _least_words(param: Param) -> int:
    if param.kind is Kind.OPTION_PAIRS:
        return 2
    return 1 if param.required else 0


def _positionals(command: Command, args: list[str]) -> Properties:
    """Words to properties in order; optional ones (left to right) get the words to spare, a
    variadic one (always last) all those left, as in `signal <name> [<pid>] <signum>`."""
    params = [param for param in command.params if param.kind in POSITIONAL]
    least = sum(_least_words(param) for param in params)
    most = None if any(param.kind in VARIADIC for param in params) else len(params)
    if len(args) < least or (most is not None and len(args) > most):
        raise UsageError(
            f"{command.name}: wrong number of arguments (usage: {command.usage})"
        )
    spare = len(args) - least
    props: Properties = {}
    index = 0
    for param in params:
        if param.kind in VARIADIC:
            props[param.name] = _gathered(command.name, param, args[index:])
            break
        if not param.required:
            if not spare:
                continue
            spare -= 1
        props[param.name] = _typed(command.name, param, f"<{param.word}>", args[index])
        index += 1
    return props


def _gathered(command: str, param: Param, words: list[str]) -> Any:
    if param.kind is Kind.REST:
        # Circus joins the rest of the line: `add web python -m http.server` works unquoted.
        return " ".join(words)
    if param.kind is Kind.WORDS:
        return words
    if len(words) % 2:
        key, value = param.word.split()
        raise UsageError(f"{command}: the {key}s and {value}s must come in pairs")
    keys = [word.lower() for word in words[::2]]
    return {key: set_value(key, raw) for key, raw in zip(keys, words[1::2], strict=True)}


def _typed(command: str, param: Param, what: str, raw: str) -> Any:
    """One word as its parameter's type; `what` names it in errors (`<nb>`, `--signum`)."""
    if param.type is Type.INT:
        try:
            return int(raw)
        except ValueError:
            raise UsageError(f"{command}: {what} must be an integer, got {raw!r}") from None
    if param.type is Type.SECONDS:
        try:
            return float(raw)
        except ValueError:
            raise UsageError(f"{command}: {what} must be a number, got {raw!r}") from None
    if param.type is Type.SIGNAL:
        return signal_value(raw)
    if param.type is Type.OBJECT:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise UsageError(f"{command}: the {param.name} must be a JSON object, got {raw!r}")
        return data
    return raw


def signal_value(raw: str) -> int | str:
    """A signal as typed: a number is sent as an int, a name (HUP, SIGTERM) as is."""
    return int(raw) if raw.isdecimal() else raw


# -- `set` values --------------------------------------------------------------------------------

def set_value(key: str, raw: str) -> Any:
    """A `set` value typed as the option's own parser types it (Circus's `convert_option`).

    Booleans, integers, numbers and signals are sent typed (a Circus arbiter refuses "3" for
    numprocesses); `env` as an object from `A=1,B=2`; everything else as the text given.
    """
    if key == "env":
        return _parse_env(raw)
    if key.startswith("rlimit_"):
        return int(raw) if raw.isdecimal() else raw
    # The option table is only needed here: keep it out of every other command's start-up.
    from circus_sd.config.model import WatcherConfig
    from circus_sd.config.options import options_of
    from circus_sd.config.watcher_keys import sent_as_text

    if sent_as_text(key):
        # Numbers whose text means more than the number: the arbiter reads them itself.
        return raw

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
