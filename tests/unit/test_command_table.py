"""The command table (control/registry.py) and what is derived from it: the server's handlers
and property checks, circusctl's parsing and help. Every test walks the whole table, so a new
command is covered without a new test."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from circus_sd.control import handlers
from circus_sd.control.param_checks import check_properties
from circus_sd.control.protocol import CommandError
from circus_sd.control.registry import (
    COMMANDS,
    POSITIONAL,
    VARIADIC,
    Command,
    Kind,
    Param,
    Type,
    render_usage,
)
from circus_sd.ctl.commandline import CLIENT_COMMANDS, command_help, parse_argv
from circus_sd.ctl.properties import build_properties

HANDLERS_SOURCE = Path(handlers.__file__).read_text()

# -- handlers ------------------------------------------------------------------------------------


def _decorated_names() -> list[str]:
    """The names in handlers.py's `@handles("...")` lines, read from its source."""
    names = []
    for node in ast.walk(ast.parse(HANDLERS_SOURCE)):
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Call)
                    and isinstance(decorator.func, ast.Name)
                    and decorator.func.id == "handles"
                ):
                    argument = decorator.args[0]
                    assert isinstance(argument, ast.Constant), ast.dump(decorator)
                    assert isinstance(argument.value, str), ast.dump(decorator)
                    names.append(argument.value)
    return names


def test_every_command_has_exactly_one_handler_and_every_handler_a_command() -> None:
    names = _decorated_names()
    assert len(names) == len(set(names)), "a command bound twice"
    assert set(names) == set(COMMANDS)
    assert set(handlers.HANDLERS) == set(COMMANDS)


def test_binding_an_undeclared_or_bound_command_fails_at_once() -> None:
    with pytest.raises(LookupError, match="does not declare"):
        handlers.handles("frobnicate")
    with pytest.raises(LookupError, match="a second handler for 'start'"):
        handlers.handles("start")


# -- the declarations ----------------------------------------------------------------------------

# The wire type each command-line kind produces (ARGUMENT, VALUE and WIRE take their own).
KIND_TYPES = {Kind.SWITCH: Type.BOOL, Kind.REST: Type.STR, Kind.WORDS: Type.LIST,
              Kind.OPTION_PAIRS: Type.OBJECT}


@pytest.mark.parametrize("command", [*COMMANDS.values(), *CLIENT_COMMANDS.values()],
                         ids=lambda command: command.name)
def test_parameters_are_consistent(command: Command) -> None:
    params = command.params
    assert len({param.name for param in params}) == len(params), "a property twice"
    switches = [param.switch for param in params if param.kind in (Kind.SWITCH, Kind.VALUE)]
    assert len(set(switches)) == len(switches), "a switch twice"
    positional = [param for param in params if param.kind in POSITIONAL]
    for index, param in enumerate(positional):
        if param.kind in VARIADIC:
            # The words left go to it: nothing may follow it, no optional word come before it.
            assert index == len(positional) - 1, param
            assert all(other.required for other in positional[:index]), param
    for param in params:
        if param.kind in KIND_TYPES:
            assert param.type is KIND_TYPES[param.kind], param
        if param.choices:
            assert param.type is Type.STR, param
        if param.default is not None:
            assert param.kind is Kind.SWITCH, param
        if param.kind in (Kind.SWITCH, Kind.VALUE, Kind.WIRE):
            assert not param.required, param
    if isinstance(command, Command) and not command.waitable:
        assert all(param.name != "waiting" for param in params)


# -- usage lines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*COMMANDS, *CLIENT_COMMANDS])
def test_help_prints_the_usage_rendered_from_the_parameters(name: str) -> None:
    entry = COMMANDS[name] if name in COMMANDS else CLIENT_COMMANDS[name]
    first_line = command_help(name).splitlines()[0]
    assert first_line == f"usage: circusctl {render_usage(name, entry.params)}"


@pytest.mark.parametrize(
    ("name", "usage"),
    [  # one per kind of parameter, as Circus's usage lines read
        ("add", "add [--start] <name> <cmd>"),
        ("get", "get <name> <key> [<key> ...]"),
        ("set", "set <name> <key> <value> [<key> <value> ...] [--waiting]"),
        ("signal", "signal <name> [<pid>] [--children] [--recursive] <signum>"),
        ("kill", "kill <name> [<pid>] [--signum <sig>] [--graceful-timeout <s>]"),
        ("start", "start [<name>] [--waiting] [--match simple|glob|regex]"),
        ("reload", "reload [<name>] [--terminate] [--waiting] [--sequential]"),
        ("publish", "publish <name> <event> [<json object>]"),
        ("dstats", "dstats"),
    ],
)
def test_usage_lines_read_as_before(name: str, usage: str) -> None:
    assert COMMANDS[name].usage == usage


def test_client_commands_usage_lines() -> None:
    assert CLIENT_COMMANDS["listen"].usage == "listen [<topic> ...]"
    assert CLIENT_COMMANDS["tail"].usage == (
        "tail <name> [<name> ...] [-n|--lines <N>] [--since <time>] [--stream stdout|stderr] "
        "[--no-follow] [--raw]")


# -- circusctl's properties pass the server's check ----------------------------------------------

SAMPLES: dict[Type, list[str]] = {
    Type.STR: ["web"],
    Type.INT: ["3"],
    Type.SECONDS: ["2.5"],
    Type.SIGNAL: ["HUP"],
    Type.OBJECT: ['{"to": 3}'],
}
KIND_SAMPLES: dict[Kind, list[str]] = {
    Kind.REST: ["/bin/sleep", "10"],
    Kind.WORDS: ["numprocesses", "cmd"],
    Kind.OPTION_PAIRS: ["numprocesses", "3", "send_hup", "true"],
}


def _words(param: Param) -> list[str]:
    if param.kind in KIND_SAMPLES:
        return KIND_SAMPLES[param.kind]
    return list(param.choices[:1]) or SAMPLES[param.type]


def representative_argv(command: Command, everything: bool) -> list[str]:
    """A command line giving the required parameters, or (`everything`) all of them."""
    argv = [command.name]
    for param in command.parameters:
        if param.kind in POSITIONAL and (param.required or everything):
            argv += _words(param)
        elif everything and param.kind is Kind.SWITCH:
            argv.append(f"--{param.switch}")
        elif everything and param.kind is Kind.VALUE:
            argv += [f"--{param.switch}", *_words(param)]
    return argv


@pytest.mark.parametrize("everything", [False, True], ids=["required", "everything"])
@pytest.mark.parametrize("command", COMMANDS.values(), ids=lambda command: command.name)
def test_circusctl_sends_what_the_server_accepts(command: Command, everything: bool) -> None:
    invocation = parse_argv(representative_argv(command, everything))
    assert invocation.command == command.name
    props = build_properties(command.name, invocation.args, invocation.flags)
    check_properties(command, props)
    declared = {param.name for param in command.parameters if param.kind is not Kind.WIRE}
    assert set(props) <= declared
    assert set(command.required) <= set(props)
    if everything:
        assert set(props) == declared


# -- the server's checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "props", "message"),
    [
        ("incr", {}, "message invalid: missing property 'name'"),
        ("add", {"name": "web"}, "message invalid: missing property 'cmd'"),
        ("incr", {"name": "web", "nb": "many"}, "nb: expected an integer"),
        ("incr", {"name": ["web"]}, "name: expected a string"),
        ("kill", {"name": "web", "graceful_timeout": -1}, "graceful_timeout: expected a number"),
        ("kill", {"name": "web", "signum": "NOPE"}, "signum: expected a signal name"),
        ("signal", {"name": "web", "signum": 1, "childpid": "x"}, "childpid: expected an int"),
        ("status", {"details": "maybe"}, "details: expected a boolean"),
        ("stop", {"name": "web", "match": "fuzzy"}, "match: expected simple, glob or regex"),
    ],
)
def test_server_refuses_what_the_parameters_exclude(
    command: str, props: dict[str, Any], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        check_properties(COMMANDS[command], props)


@pytest.mark.parametrize(
    ("command", "props"),
    [
        ("incr", {"name": "web", "nb": "2", "waiting": "true"}),  # as lenient as the handlers
        ("start", {"name": None, "match": ""}),  # null is absent, "" the default match
        ("signal", {"name": "web", "signum": "term", "pid": 12.0}),
        ("add", {"name": "w", "cmd": "c", "args": ["-v"], "options": [], "extra": object()}),
        ("status", {"name": 5}),
    ],
)
def test_server_accepts_what_the_handlers_read(command: str, props: dict[str, Any]) -> None:
    check_properties(COMMANDS[command], props)
