"""circusctl without sockets: command lines -> request properties, replies -> output and status."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
from rich.console import Console

from circus_sd import client
from circus_sd.control.registry import COMMANDS
from circus_sd.ctl import (
    app,
    endpoint_choice,
    fancy,
    health,
    output_history,
    plain,
    properties,
    shell,
    since,
    tail,
    top,
)
from circus_sd.ctl.commandline import (
    CLIENT_COMMANDS,
    GlobalOptions,
    UsageError,
    command_flags,
    command_help,
    general_help,
    parse_argv,
)

# -- the command line ----------------------------------------------------------------------------


def props(line: str) -> dict[str, Any]:
    """The properties circusctl sends for a command line."""
    invocation = parse_argv(line.split())
    assert invocation.command is not None
    return properties.build_properties(invocation.command, invocation.args, invocation.flags)


def test_global_options_before_and_after_the_command() -> None:
    invocation = parse_argv(
        ["--endpoint", "ipc:///x.sock", "--timeout=2.5", "status", "web", "--json", "--prettify"]
    )
    assert invocation.command == "status"
    assert invocation.args == ["web"]
    assert invocation.options == GlobalOptions(
        endpoint="ipc:///x.sock", timeout=2.5, json=True, prettify=True
    )


def test_pubsub_endpoint_option_in_both_spellings() -> None:
    assert parse_argv(["--pubsub-endpoint", "ipc:///e"]).options.pubsub_endpoint == "ipc:///e"
    assert parse_argv(["--pubsub_endpoint=ipc:///e"]).options.pubsub_endpoint == "ipc:///e"


def test_circusctls_own_commands_take_the_switches_their_usage_shows() -> None:
    invocation = parse_argv(["tail", "web", "--stream", "stderr", "--raw"])
    assert (invocation.command, invocation.args) == ("tail", ["web"])
    assert invocation.flags == {"stream": "stderr", "raw": True}
    with pytest.raises(UsageError, match="--stream must be one of stdout, stderr"):
        parse_argv(["tail", "web", "--stream", "both"])


def test_command_names_are_case_insensitive_like_circus() -> None:
    assert parse_argv(["STATUS"]).command == "status"


def test_help_version_and_no_command() -> None:
    assert parse_argv(["-h"]).options.help
    assert parse_argv(["incr", "--help"]).options.help
    assert parse_argv(["--version"]).options.version
    assert parse_argv([]).command is None


def test_double_dash_makes_the_rest_literal() -> None:
    invocation = parse_argv(["set", "web", "args", "--", "--verbose"])
    assert invocation.args == ["web", "args", "--verbose"]
    invocation = parse_argv(["set", "--", "web", "args", "--verbose"])
    assert invocation.args == ["web", "args", "--verbose"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--endpoint"], "--endpoint needs a value"),
        (["--timeout", "soon", "status"], "--timeout: expected a number"),
        (["--timeout", "0", "status"], "positive"),
        (["--json=yes", "status"], "takes no value"),
        (["--bogus", "status"], "unknown option --bogus"),
        (["status", "--waiting"], "status: unknown option --waiting"),
        (["incr", "web", "--waiting=1"], "takes no value"),
        (["start", "--match", "fuzzy"], "must be one of simple, glob, regex"),
        (["kill", "web", "--signum"], "--signum needs a value"),
        (["--ssh", "me@host", "status"], "not supported"),
    ],
)
def test_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_argv(argv)


def test_every_registry_usage_yields_switches() -> None:
    flags = {name: command_flags(command) for name, command in COMMANDS.items()}
    assert set(flags["reload"]) == {"terminate", "waiting", "sequential"}
    assert flags["start"]["match"].choices == ("simple", "glob", "regex")
    assert flags["kill"]["signum"].metavar == "sig"
    assert flags["kill"]["graceful_timeout"].metavar == "s"
    assert set(flags["signal"]) == {"children", "recursive"}
    assert set(flags["stats"]) == {"extended"}
    assert set(flags["rm"]) == {"nostop", "waiting"}
    assert set(flags["add"]) == {"start", "waiting"}
    for name, command in COMMANDS.items():
        # Circus's asynchronous commands all take --waiting.
        assert ("waiting" in flags[name]) == command.waitable, name


# One line per command and shape: what Circus 0.19's circusctl would send (minus switches not
# given, which the arbiter defaults the same way).
PROPERTIES = [
    ("add web /bin/sleep 10", {"name": "web", "cmd": "/bin/sleep 10", "start": False}),
    ("add --start web cmd", {"name": "web", "cmd": "cmd", "start": True}),
    ("add web cmd --start --waiting", {"name": "web", "cmd": "cmd", "start": True,
                                       "waiting": True}),
    ("rm web", {"name": "web"}),
    ("rm web --nostop --waiting", {"name": "web", "nostop": True, "waiting": True}),
    ("start", {}),
    ("start web --waiting --match regex", {"name": "web", "waiting": True, "match": "regex"}),
    ("stop web*", {"name": "web*"}),
    ("stop --match=simple web", {"name": "web", "match": "simple"}),
    ("restart web --waiting", {"name": "web", "waiting": True}),
    ("reload", {"graceful": True}),
    ("reload web --terminate --sequential --waiting",
     {"name": "web", "graceful": False, "sequential": True, "waiting": True}),
    ("reloadconfig", {}),
    ("reloadconfig --waiting", {"waiting": True}),
    ("quit", {}),
    ("quit --waiting", {"waiting": True}),
    ("reexec", {}),
    ("list", {}),
    ("list web", {"name": "web"}),
    ("listsockets", {}),
    ("status", {}),
    ("status web", {"name": "web"}),
    ("numprocesses", {}),
    ("numprocesses web", {"name": "web"}),
    ("numwatchers", {}),
    ("incr web", {"name": "web"}),
    ("incr web 3 --waiting", {"name": "web", "nb": 3, "waiting": True}),
    ("decr web 2", {"name": "web", "nb": 2}),
    ("get web numprocesses cmd", {"name": "web", "keys": ["numprocesses", "cmd"]}),
    ("set web numprocesses 3", {"name": "web", "options": {"numprocesses": 3}}),
    ("set web NumProcesses 3 send_hup true --waiting",
     {"name": "web", "options": {"numprocesses": 3, "send_hup": True}, "waiting": True}),
    ("options web", {"name": "web"}),
    ("freeze web", {"name": "web"}),
    ("thaw web", {"name": "web"}),
    ("globaloptions", {}),
    ("globaloptions pubsub_endpoint", {"option": "pubsub_endpoint"}),
    ("signal web HUP", {"name": "web", "signum": "HUP"}),
    ("signal web 1234 9", {"name": "web", "pid": 1234, "signum": 9}),
    ("signal web --children --recursive SIGUSR1",
     {"name": "web", "signum": "SIGUSR1", "children": True, "recursive": True}),
    ("kill web", {"name": "web"}),
    ("kill web 1234 --signum KILL --graceful-timeout 2.5 --waiting",
     {"name": "web", "pid": 1234, "signum": "KILL", "graceful_timeout": 2.5, "waiting": True}),
    ("kill web --signum 9 --graceful_timeout=1", {"name": "web", "signum": 9,
                                                  "graceful_timeout": 1.0}),
    ("stats", {}),
    ("stats --extended web", {"name": "web", "extended": True}),
    ("stats web 1234", {"name": "web", "process": 1234}),
    ("dstats", {}),
    ("ipython", {}),
    ("publish autoscale grow", {"name": "autoscale", "event": "grow"}),
    ('publish autoscale grow {"to":3}', {"name": "autoscale", "event": "grow", "data": {"to": 3}}),
]


@pytest.mark.parametrize(("line", "expected"), PROPERTIES)
def test_properties(line: str, expected: dict[str, Any]) -> None:
    assert props(line) == expected


def test_every_registry_command_has_a_properties_case() -> None:
    assert {line.split()[0] for line, _ in PROPERTIES} == set(COMMANDS)
    assert not set(CLIENT_COMMANDS) & set(COMMANDS)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("add web", "wrong number of arguments"),
        ("rm", "wrong number of arguments"),
        ("rm a b", "wrong number of arguments"),
        ("start a b", "wrong number of arguments"),
        ("reload a b", "wrong number of arguments"),
        ("quit now", "wrong number of arguments"),
        ("status a b", "wrong number of arguments"),
        ("numwatchers x", "wrong number of arguments"),
        ("incr", "wrong number of arguments"),
        ("incr web many", "<nb> must be an integer"),
        ("decr web 1 2", "wrong number of arguments"),
        ("get web", "wrong number of arguments"),
        ("set web numprocesses", "wrong number of arguments"),
        ("set web numprocesses 3 cmd", "pairs"),
        ("set web numprocesses three", "numprocesses: expected an integer"),
        ("set web env A", "env: expected KEY=VALUE"),
        ("options", "wrong number of arguments"),
        ("globaloptions a b", "wrong number of arguments"),
        ("signal web", "wrong number of arguments"),
        ("signal web x HUP", "<pid> must be an integer"),
        ("kill web 1 2", "wrong number of arguments"),
        ("kill web --graceful-timeout soon", "must be a number"),
        ("stats web 1 2", "wrong number of arguments"),
        ("stats web me", "<pid> must be an integer"),
        ("dstats now", "wrong number of arguments"),
        ("bogus arg", "unknown command 'bogus'"),
    ],
)
def test_argument_errors(line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        props(line)


def test_an_unknown_command_without_arguments_goes_to_the_arbiter() -> None:
    # The arbiter's "unknown command" error reply is what the user sees (exit 3).
    assert props("bogus") == {}


@pytest.mark.parametrize(
    ("key", "raw", "value"),
    [
        ("numprocesses", "3", 3),
        ("warmup_delay", "0.5", 0.5),
        ("graceful_timeout", "2", 2.0),
        ("send_hup", "true", True),
        ("respawn", "off", False),
        ("stop_signal", "TERM", 15),
        ("stop_signal", "SIGKILL", 9),
        ("flapping.attempts", "4", 4),
        ("cmd", "/bin/sleep 5", "/bin/sleep 5"),
        ("uid", "1000", "1000"),  # the arbiter resolves users against its own database
        ("gid", "www-data", "www-data"),
        ("umask", "022", "022"),  # octal: a number would lose that
        ("env", "A=1, B = two", {"A": "1", "B": "two"}),
        ("rlimit_nofile", "1024", 1024),
        ("rlimit_core", "infinity", "infinity"),
        ("hooks.before_start", "mod.fn", "mod.fn"),
        ("no_such_option", "x", "x"),  # refused by the arbiter, with its reason
    ],
)
def test_set_values_are_typed_like_the_option(key: str, raw: str, value: Any) -> None:
    converted = properties.set_value(key, raw)
    assert converted == value
    assert type(converted) is type(value)


# -- help ------------------------------------------------------------------------------------------


def test_help_of_every_command_comes_from_the_registry() -> None:
    for name, command in COMMANDS.items():
        text = command_help(name)
        assert text.startswith(f"usage: circusctl {command.usage}\n")
        assert command.doc in text
        assert ("--waiting" in text) == command.waitable or "[--waiting]" in command.usage
    for name in CLIENT_COMMANDS:
        assert command_help(name).startswith("usage: circusctl ")
    with pytest.raises(UsageError, match="unknown command"):
        command_help("bogus")


def test_general_help_lists_every_command() -> None:
    text = general_help("ipc:///run/circus-sd/control.sock")
    for name in [*COMMANDS, *CLIENT_COMMANDS]:
        assert f"\n  {name} " in text
    assert "exit status: 0 ok, 3" in text


# -- plain output (stdout not a terminal): Circus's console_msg ------------------------------------


def ok(**extra: Any) -> dict[str, Any]:
    return {"status": "ok", "time": 1.0, "id": "x", **extra}


def error(reason: str) -> dict[str, Any]:
    return {"status": "error", "reason": reason, "errno": 3, "tb": None, "time": 1.0, "id": "x"}


INFO = {"pid": 12, "cmdline": "sleep", "username": "root", "nice": 0, "mem_info1": "1M",
        "mem_info2": "2M", "cpu": 0.5, "mem": 0.1, "ctime": "0:00.01", "children": []}
CHILD = {**INFO, "pid": 13, "children": []}
INFO_LINE = "12  sleep root 0 1M 2M 0.5 0.1 0:00.01"
CHILD_LINE = "13  sleep root 0 1M 2M 0.5 0.1 0:00.01"

PLAIN = [
    ("status", ok(statuses={"web": "active", "db": "stopped"}, details={}),
     "db: stopped\nweb: active"),
    ("status", {"status": "active", "time": 1.0, "id": "x"}, "active"),
    ("status", ok(statuses={}), ""),
    ("list", ok(watchers=["db", "web"]), "db,web"),
    ("list", ok(pids=[12, 13]), "12,13"),
    ("list", ok(pids=[]), ""),
    ("list", ok(), "error: Response doesn't contain 'pids' nor 'watchers'."),
    ("listsockets", ok(sockets=[{"fd": 5, "name": "web", "host": "127.0.0.1", "port": 8080},
                                {"fd": 6, "name": "u", "path": "/run/u.sock"}]),
     "5:socket 'web' at 127.0.0.1:8080\n6:socket 'u' at /run/u.sock"),
    ("numprocesses", ok(numprocesses=3), "3"),
    ("numwatchers", ok(numwatchers=2), "2"),
    ("incr", ok(numprocesses=4), "4"),
    ("incr", ok(), "ok"),
    ("decr", ok(numprocesses=1, singleton=True),
     "This watcher is a Singleton - not changing the number of processes"),
    ("get", ok(options={"numprocesses": 2, "send_hup": False}),
     "numprocesses: 2\nsend_hup: False"),
    ("options", ok(options={"uid": None, "env": {"A": "1", "B": "2"}, "args": ["-v"]}),
     "uid: \nenv: A=1,B=2\nargs: ['-v']"),
    ("globaloptions", ok(options={"endpoint": "ipc:///c", "check_delay": None}),
     "endpoint: ipc:///c\ncheck_delay: "),
    ("stats", ok(infos={"web": {"12": {**INFO, "children": [CHILD]}}, "db": {}}),
     f"web:\n12: {INFO_LINE}\n   {CHILD_LINE}\ndb:"),
    ("stats", ok(name="web", info={"12": INFO, "14": "No such process (stopped?)"}),
     f"web:\n12: {INFO_LINE}\n14: No such process (stopped?)"),
    ("stats", ok(process=12, info=INFO), f"12: {INFO_LINE}\n"),
    ("stats", ok(name="web", info={"12": {"pid": 12}}), "web:\n12: 12  N/A N/A N/A N/A N/A "
                                                        "N/A N/A N/A"),
    ("dstats", ok(info={**INFO, "children": [CHILD]}),
     f"Main Process:\n    {INFO_LINE}\nChildren:\n    {CHILD_LINE}"),
    ("dstats", ok(info=INFO), f"Main Process:\n    {INFO_LINE}"),
    ("start", ok(info={"started": [12], "kept": []}), "ok"),
    ("quit", ok(), "ok"),
    ("ipython", ok(shell=False, msg="no IPython"), "error: Could not start ipython kernel"),
    ("bogus", error("unknown command: 'bogus'"), "error: unknown command: 'bogus'"),
    # Circus printed a bare "error" here and the bare reason for globaloptions: fixed.
    ("status", error("program x not found"), "error: program x not found"),
    ("globaloptions", error("x: not a known option"), "error: x: not a known option"),
]


@pytest.mark.parametrize(("command", "reply", "text"), PLAIN)
def test_plain_output(command: str, reply: dict[str, Any], text: str) -> None:
    assert plain.format_reply(command, reply) == text


def test_error_is_the_status_key_not_anything_but_ok() -> None:
    # `status NAME` replies carry the watcher's status in the envelope's key.
    assert not plain.is_error({"status": "stopped"})
    assert plain.is_error(error("x"))


# -- what gets printed where, and the exit status --------------------------------------------------


def show(reply: dict[str, Any], command: str = "status", fancy_: bool = False,
         **options: Any) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    session = app.Session(GlobalOptions(**options), stdout, stderr, fancy=fancy_)
    status = session.show(command, reply, session.options)
    return status, stdout.getvalue(), stderr.getvalue()


def test_plain_ok_goes_to_stdout_with_status_0() -> None:
    assert show(ok(statuses={"web": "active"})) == (0, "web: active\n", "")


def test_error_reply_goes_to_stderr_with_status_3() -> None:
    assert show(error("program x not found")) == (3, "", "error: program x not found\n")


def test_json_prints_the_reply_and_keeps_the_exit_status() -> None:
    status, out, err = show(error("nope"), json=True)
    assert (status, err) == (3, "")
    assert json.loads(out) == error("nope")
    assert "\n" not in out.rstrip("\n")


def test_prettify_indents_and_sorts() -> None:
    status, out, _ = show(ok(watchers=["a"]), command="list", prettify=True)
    assert status == 0
    assert out.startswith('{\n  "id": "x",\n')
    assert json.loads(out)["watchers"] == ["a"]


def test_main_without_an_arbiter_exits_1_with_the_reason(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    # The ipc socket is checked before any ZMQ: no socket is involved here.
    status = app.main(["--endpoint", f"ipc://{tmp_path}/none.sock", "status"])
    assert status == 1
    err = capsys.readouterr().err
    assert f"no control socket at {tmp_path}/none.sock" in err
    assert "the arbiter is not running, or the endpoint is wrong" in err


def test_main_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert app.main(["incr"]) == 2
    assert "incr: wrong number of arguments" in capsys.readouterr().err
    assert app.main(["--nope"]) == 2


def test_main_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert app.main(["--help"]) == 0
    assert "commands:" in capsys.readouterr().out
    assert app.main(["help", "incr"]) == 0
    assert capsys.readouterr().out.startswith("usage: circusctl incr <name>")
    assert app.main(["decr", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: circusctl decr <name>")
    assert app.main(["help", "bogus"]) == 2
    assert app.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("circusctl ")


# -- terminal output (rich) -----------------------------------------------------------------------

DETAILS = {
    "web": {"state": "active", "pids": [12, 13], "numprocesses": 2, "restarts": 1,
            "reason": None, "started": 1000.0},
    "db": {"state": "paused", "pids": [], "numprocesses": 1, "restarts": 5,
           "reason": "flapping", "started": None},
}


def rendered(command: str, reply: dict[str, Any], now: float = 1100.0) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    fancy.render(Console(file=out, width=120), Console(file=err, width=120), command, reply, now)
    return out.getvalue(), err.getvalue()


STATS = {
    "web": {"12": {"cpu": 1.5, "rss": 2 * 1024 * 1024, "age": 100.0,
                   "children": [{"cpu": 2.0, "rss": 1024 * 1024, "children": []}]},
            "13": {"cpu": 0.5, "rss": 1024 * 1024, "age": 50.0, "children": []}},
    "db": {},
}


def test_status_table_is_one_compact_row_per_watcher() -> None:
    out, _ = rendered("status", ok(statuses={"web": "active", "db": "stopped"}, details=DETAILS))
    web = next(line for line in out.splitlines() if line.startswith("web"))
    db = next(line for line in out.splitlines() if line.startswith("db"))
    assert web.split() == ["web", "active", "2/2", "1m40s", "1"]
    assert db.split() == ["db", "paused", "(flapping)", "0/1", "-", "5"]
    assert out.index("db") < out.index("web")


def test_status_table_sums_cpu_and_memory_of_processes_and_descendants() -> None:
    reply = ok(statuses={"web": "active", "db": "stopped"}, details=DETAILS, stats=STATS)
    out, _ = rendered("status", reply)
    assert out.splitlines()[0].split() == [
        "watcher", "state", "procs", "uptime", "restarts", "cpu", "mem"]
    web = next(line for line in out.splitlines() if line.startswith("web"))
    assert web.split()[-2:] == ["4.0%", "4.0M"]
    assert len(out.splitlines()) == 3  # no pids without --all
    out, _ = rendered("status", {**reply, "all": True})
    rows = [line.split() for line in out.splitlines()]
    assert ["├", "12", "1m40s", "3.5%", "3.0M"] in rows
    assert ["└", "13", "50s", "0.5%", "1.0M"] in rows


def test_a_narrow_terminal_cuts_the_reason_rather_than_wrapping() -> None:
    details = {"db": {**DETAILS["db"], "reason": "flapping: 5 restarts in 1 s, retrying in 7 s"}}
    out, err = io.StringIO(), io.StringIO()
    fancy.render(Console(file=out, width=50), Console(file=err, width=50), "status",
                 ok(statuses={"db": "stopped"}, details=details, stats={"db": {}}), 0.0)
    assert len(out.getvalue().splitlines()) == 2, out.getvalue()


def test_status_of_a_watcher_with_readiness_shows_each_process() -> None:
    api = {"state": "starting", "pids": [12, 13], "numprocesses": 2, "restarts": 0,
           "reason": None, "started": 1000.0,
           "processes": [{"pid": 12, "wid": 1, "ready": True, "status": "serving 3 clients"},
                         {"pid": 13, "wid": 2, "ready": False, "status": None}]}
    out, _ = rendered("status", ok(status="starting", details={"api": api}))
    lines = out.splitlines()
    assert next(line for line in lines if line.startswith("api")).split()[-1] == "1/2"
    assert next(line for line in lines if line.startswith("1 ")).split() == [
        "1", "12", "ready", "serving", "3", "clients"]
    assert next(line for line in lines if line.startswith("2 ")).split() == [
        "2", "13", "not", "yet", "-"]
    # Several watchers: the ready column only, "-" for those without readiness.
    out, _ = rendered("status", ok(statuses={}, details={**DETAILS, "api": api}))
    assert next(line for line in out.splitlines() if line.startswith("web")).split()[-1] == "-"
    assert "status (sd_notify)" not in out


def test_status_table_without_details_falls_back_to_statuses() -> None:
    out, _ = rendered("status", ok(statuses={"web": "active"}))
    assert out.split() == ["watcher", "state", "web", "active"]
    out, _ = rendered("status", {"status": "stopped", "time": 1.0})
    assert out.strip() == "stopped"


def test_rich_errors_go_to_stderr() -> None:
    out, err = rendered("status", error("program x not found"))
    assert (out, err.strip()) == ("", "error: program x not found")


@pytest.mark.parametrize(
    ("command", "reply", "expected"),
    [
        ("stats", ok(infos={"web": {"12": {**INFO, "age": 75, "children": [CHILD]}}}),
         ["web", "12", "1m15s", "└ 13"]),
        ("stats", ok(name="web", info={"12": INFO}), ["web", "12", "sleep"]),
        ("stats", ok(process=12, info=INFO), ["12", "sleep"]),
        ("dstats", ok(info=INFO), ["12", "sleep"]),
        ("options", ok(options={"env": {"A": "1"}, "numprocesses": 2}), ["A=1", "numprocesses"]),
        ("listsockets", ok(sockets=[{"fd": 5, "name": "web", "path": "/s"}]), ["web", "/s"]),
        ("list", ok(watchers=["a", "b"]), ["a,b"]),
        ("incr", ok(numprocesses=3), ["3"]),
    ],
)
def test_rich_views(command: str, reply: dict[str, Any], expected: list[str]) -> None:
    out, err = rendered(command, reply)
    assert err == ""
    for text in expected:
        assert text in out


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (61, "1m01s"), (3720, "1h02m"), (2 * 86400 + 3600, "2d01h")],
)
def test_durations(seconds: float, text: str) -> None:
    assert fancy.format_duration(seconds) == text


def test_top_view_rows_per_process() -> None:
    status = ok(statuses={"web": "active", "db": "stopped"}, details=DETAILS)
    stats = ok(infos={"web": {"12": {**INFO, "age": 10}, "13": {**INFO, "pid": 13, "age": 20}},
                      "db": {}})
    out = io.StringIO()
    Console(file=out, width=120).print(top.top_view(status, stats, "ipc:///c", 1100.0))
    lines = out.getvalue().splitlines()
    assert "2 watchers, 2 processes" in lines[0]
    rows = [line.split() for line in lines[2:] if line.strip()]
    assert rows == [
        ["db", "paused", "-", "-", "-", "-", "-", "5"],
        ["web", "active", "12", "0.5", "0.1", "1M", "10s", "1"],
        ["13", "0.5", "0.1", "1M", "20s"],
    ]


# -- the interactive shell -------------------------------------------------------------------------


class ScriptedClient:
    """Stands in for CircusClient: answers from a table, records what it was asked."""

    def __init__(self, replies: dict[str, dict[str, Any]]) -> None:
        self.replies = replies
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, command: str, **properties: Any) -> dict[str, Any]:
        self.calls.append((command, properties))
        return self.replies.get(command, error(f"unknown command: {command!r}"))

    def close(self) -> None:
        pass


def scripted_shell(replies: dict[str, dict[str, Any]]
                   ) -> tuple[shell.CircusShell, ScriptedClient, io.StringIO, io.StringIO]:
    stdout, stderr = io.StringIO(), io.StringIO()
    scripted = ScriptedClient(replies)
    session = app.Session(GlobalOptions(), stdout, stderr, fancy=False,
                          client=cast(client.CircusClient, scripted))
    return shell.CircusShell(session), scripted, stdout, stderr


def test_shell_completes_commands_and_watcher_names() -> None:
    ctl_shell, scripted, _, _ = scripted_shell({"list": ok(watchers=["db", "web", "worker"])})
    assert ctl_shell.completenames("re") == ["reexec", "reload", "reloadconfig", "restart"]
    assert "exit" in ctl_shell.completenames("")
    assert ctl_shell.completedefault("w", "incr w", 5, 6) == ["web", "worker"]
    assert ctl_shell.completedefault("", "status ", 7, 7) == ["db", "web", "worker"]
    assert scripted.calls == [("list", {})]  # names are cached for a moment
    assert ctl_shell.complete_help("st", "help st", 5, 7) == ["start", "stats", "status", "stop"]


def test_shell_lines_run_like_command_lines() -> None:
    ctl_shell, scripted, stdout, stderr = scripted_shell(
        {"incr": ok(numprocesses=3), "status": ok(statuses={"web": "active"})})
    assert not ctl_shell.onecmd("incr web 2 --waiting")
    assert not ctl_shell.onecmd("status")
    assert not ctl_shell.onecmd("")  # does not repeat the last command
    assert not ctl_shell.onecmd("incr")
    assert not ctl_shell.onecmd("--endpoint ipc:///elsewhere status")
    assert scripted.calls == [("incr", {"name": "web", "nb": 2, "waiting": True}), ("status", {})]
    assert stdout.getvalue() == "3\nweb: active\n"
    assert "incr: wrong number of arguments" in stderr.getvalue()
    assert "apply to the whole shell" in stderr.getvalue()
    assert ctl_shell.onecmd("exit")


# -- client helpers --------------------------------------------------------------------------------


def test_request_ids_are_uuid4_hex() -> None:
    ids = {client.new_request_id() for _ in range(100)}
    assert len(ids) == 100
    for request_id in ids:
        assert uuid.UUID(hex=request_id).version == 4
        assert uuid.UUID(hex=request_id).hex == request_id


def test_request_frame() -> None:
    request_id, frame = client.build_request("incr", {"name": "web"})
    assert json.loads(frame) == {"id": request_id, "command": "incr",
                                 "properties": {"name": "web"}}
    _, frame = client.build_request("stop", {}, cast=True)
    assert json.loads(frame)["msg_type"] == "cast"


def test_endpoint_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(client.ENDPOINT_ENV, raising=False)
    assert client.resolve_endpoint(None).endswith("/control.sock")
    monkeypatch.setenv(client.ENDPOINT_ENV, "tcp://127.0.0.1:5555")
    assert client.resolve_endpoint(None) == "tcp://127.0.0.1:5555"
    assert client.resolve_endpoint("ipc:///x") == "ipc:///x"


def test_missing_ipc_socket_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(client.CallError, match="arbiter is not running, or the endpoint is wrong"):
        client.check_ipc_endpoint(f"ipc://{tmp_path}/control.sock")
    client.check_ipc_endpoint("tcp://127.0.0.1:5555")  # nothing to check before connecting


def test_events_decode() -> None:
    assert client.decode_event([b"watcher.web.spawn", b'{"process_pid": 12}']) == (
        "watcher.web.spawn", {"process_pid": 12})
    assert client.decode_event([b"t", b"[1]"]) == ("t", {"data": [1]})
    assert client.decode_event([b"t", b"\xff"]) == ("t", {"raw": "\ufffd"})


# -- tail: --since, where history is, reading files -----------------------------------------------


def test_since_reads_journalctls_common_spellings() -> None:
    now = 1_800_000_000.0
    assert since.parse_since("-1h", now) == now - 3600
    assert since.parse_since("10 min ago", now) == now - 600
    assert since.parse_since("1h 30min ago", now) == now - 5400
    assert since.parse_since("-90s", now) == now - 90
    assert since.parse_since("now", now) == now
    assert since.parse_since("2026-12-02 10:00", now) == time_of("2026-12-02 10:00:00")
    assert since.parse_since("2026-12-02T10:00:05", now) == time_of("2026-12-02 10:00:05")
    assert since.parse_since("2026-12-02", now) == time_of("2026-12-02 00:00:00")
    assert since.parse_since("yesterday", now) == since.parse_since("today", now) - 86400
    for bad in ("-1 fortnight", "soon", "2026-13-02", "ago", "-"):
        with pytest.raises(since.SinceError, match="--since: expected"):
            since.parse_since(bad, now)


def time_of(text: str) -> float:
    import datetime

    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timestamp()


def test_tail_takes_n_since_and_no_follow() -> None:
    invocation = parse_argv(["tail", "web", "db*", "-n", "3", "--no-follow"])
    request = tail.tail_request(invocation, 1000.0)
    assert request == tail.TailRequest(("web", "db*"), 3, None, None, False, False)
    assert parse_argv(["tail", "web", "-n5"]).flags == {"lines": "5"}
    assert parse_argv(["tail", "web", "--lines=5"]).flags == {"lines": "5"}
    request = tail.tail_request(parse_argv(["tail", "web", "--since", "-1h"]), 10000.0)
    assert (request.lines, request.since, request.follow) == (None, 6400.0, True)
    with pytest.raises(UsageError, match="-n/--lines must be a number"):
        tail.tail_request(parse_argv(["tail", "web", "-n", "x"]), 0.0)
    with pytest.raises(UsageError, match="give one or more watcher names"):
        tail.tail_request(parse_argv(["tail"]), 0.0)
    with pytest.raises(UsageError, match="unknown option --x"):
        parse_argv(["tail", "web", "--x"])


def test_tail_names_are_globs_matched_once_each() -> None:
    known = ["web1", "web2", "db", "Api"]
    assert tail.match_watchers(("web*", "web1", "api"), known) == (["web1", "web2", "Api"], [])
    assert tail.match_watchers(("nosuch", "db"), known) == (["db"], ["nosuch"])


def test_where_a_watchers_output_is_kept() -> None:
    where = output_history.stream_target
    file_ = {"stdout_stream.class": "FileStream", "stdout_stream.filename": "/l/web.out"}
    assert where(file_, "stdout") == output_history.StreamTarget(output_history.Where.FILE,
                                                                 "/l/web.out")
    assert where(file_, "stderr").where is output_history.Where.NOWHERE
    circus_style = {"stderr_stream_conf": {"class": "circus.stream.TimedRotatingFileStream",
                                           "filename": "/l/err"}}
    assert where(circus_style, "stderr").path == "/l/err"
    assert where({"stdout_stream.filename": "/l/x"}, "stdout").path == "/l/x"
    assert where({"stdout_stream.class": "JournalStream"}, "stdout").where is (
        output_history.Where.JOURNAL)
    direct = where({"stdout_stream.class": "JournalStream", "stdout_stream.direct": True},
                   "stdout")
    assert direct.where is output_history.Where.NOWHERE and "direct" in direct.why


def test_file_tail_reads_the_last_lines_and_reaches_into_backups(tmp_path: Path) -> None:
    import os

    log = tmp_path / "web.out"
    backup = tmp_path / "web.out.1"
    older = tmp_path / "web.out.2"
    older.write_bytes(b"".join(b"old %d\n" % i for i in range(3)))
    backup.write_bytes(b"".join(b"mid %d\n" % i for i in range(100_000)))
    log.write_bytes(b"new 0\nnew 1\n")
    os.utime(older, (1, 1))
    os.utime(backup, (2, 2))
    lines = [line.data for line in output_history.file_tail(str(log), 4)]
    assert lines == [b"mid 99998", b"mid 99999", b"new 0", b"new 1"]
    assert [line.data for line in output_history.file_tail(str(log), 1)] == [b"new 1"]
    assert output_history.file_tail(str(tmp_path / "none"), 3) == []
    everything = output_history.file_tail(str(log), 200_000)
    assert len(everything) == 100_005 and everything[0].data == b"old 0"


def test_health_verdicts_follow_systemctl() -> None:
    states = {"web": "active", "db": "stopped", "api": "failed", "job": "paused"}
    active, failed = health.CHECKS["is-active"], health.CHECKS["is-failed"]
    assert health.verdict(active, ["web"], states) == (["active"], 0)
    assert health.verdict(active, ["db", "job"], states) == (["inactive", "activating"], 3)
    assert health.verdict(active, ["nosuch"], states) == (["inactive"], 4)
    assert health.verdict(active, ["nosuch", "db"], states) == (["inactive", "inactive"], 3)
    assert health.verdict(failed, ["a*"], states) == (["failed"], 0)
    assert health.verdict(failed, ["WEB"], states) == (["active"], 1)
    assert health.verdict(failed, ["x*"], states) == ([], 4)


def test_endpoint_choice_falls_back_to_circus_port(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setattr("circus_sd.endpoints.client_default_endpoint",
                        lambda: f"ipc://{tmp_path}/control.sock")
    choose = endpoint_choice.choose_endpoint
    assert choose("ipc:///given", {}) == "ipc:///given"
    assert choose(None, {"CIRCUSCTL_ENDPOINT": "tcp://h:1"}) == "tcp://h:1"
    assert choose(None, {}, probe=lambda _: None) == "tcp://127.0.0.1:5555"
    with pytest.raises(client.CallError) as refused:
        choose(None, {}, probe=lambda _: "Connection refused")
    assert f"ipc://{tmp_path}/control.sock" in str(refused.value)
    assert "tcp://127.0.0.1:5555 (connection refused)" in str(refused.value)
    (tmp_path / "control.sock").touch()
    assert choose(None, {}, probe=lambda _: None) == f"ipc://{tmp_path}/control.sock"


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert app.main(["--endpoint", "ipc:///nowhere.sock", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'bogus'" in err and "usage: circusctl" in err
