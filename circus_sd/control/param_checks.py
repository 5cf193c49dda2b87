"""A request's properties checked against its command's declared parameters (registry.py).

Before any handler runs: the required properties are there, and scalar values read as their
type, with the same leniency the handlers read them with (protocol.prop_*: "3" is an integer,
"true" a boolean). Lists and objects are left to their handler, whose error says what they
must hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from circus_sd.config.options import OptionValueError, signal_number
from circus_sd.control.protocol import CommandError, prop_bool, prop_int, prop_seconds, prop_str
from circus_sd.control.registry import Command, Param, Type


def prop_signal(props: dict[str, Any], key: str) -> int:
    """A signal given as a number or a name (HUP, SIGTERM); an error if absent or unknown."""
    try:
        return signal_number(str(props.get(key)))
    except OptionValueError as exc:
        raise CommandError(f"{key}: {exc}") from None


_READERS: dict[Type, Callable[[dict[str, Any], str], object]] = {
    Type.STR: prop_str,
    Type.INT: prop_int,
    Type.SECONDS: prop_seconds,
    Type.BOOL: prop_bool,
    Type.SIGNAL: prop_signal,
}


def check_properties(command: Command, props: dict[str, Any]) -> None:
    """Raise CommandError (Circus's "message invalid" for a missing one) unless `props` fit."""
    for key in command.required:
        if key not in props:
            raise CommandError(f"message invalid: missing property {key!r}")
    for param in command.parameters:
        if props.get(param.name) is not None:
            _check(param, props)


def _check(param: Param, props: dict[str, Any]) -> None:
    reader = _READERS.get(param.type)
    if reader is not None:
        reader(props, param.name)
    if param.choices:
        # Empty means the default, as the handlers read it (`match` "" is glob).
        value = prop_str(props, param.name)
        if value and value not in param.choices:
            expected = ", ".join(param.choices[:-1]) + " or " + param.choices[-1]
            raise CommandError(f"{param.name}: expected {expected}, got {value!r}")
