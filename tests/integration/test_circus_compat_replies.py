"""The same configurations run by the real Circus 0.19 arbiter and by circus-sd, side by side.

For each configuration both daemons' `status`, `list`, `options` and `globaloptions` replies are
compared key by key and JSON type by type (circus-sd may add keys; each intentional difference
is named below, with its reason, and in the README's "Coming from Circus"), and so is the order
in which watchers start, at start-up and on `start`/`stop` of all. Circus runs from its own venv
(see test_circus_compat.py), in a directory of its own under the test's, and is stopped by pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from arbiter_harness import Circus, report_command, wait_until
from control_helpers import Clients, ControlClient, clients, control_endpoint
from test_circus_compat import CIRCUS_VENV, CIRCUS_VERSION

from circus_sd.client import CircusClient

CIRCUSD = CIRCUS_VENV / "bin" / "circusd"
STOP_DEADLINE = 15.0

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        CIRCUS_VERSION is None or not CIRCUS_VERSION.startswith("0.19"),
        reason=f"needs circus 0.19 in {CIRCUS_VENV} (make .build/bench-venv/.stamp)",
    ),
]

# Keys of Circus's replies that circus-sd deliberately does not send, and why.
NOT_SENT = {
    ("options", "__name__"): "configparser's `watcher:NAME` section name, leaked by Circus into "
    "its free-form options",
}
# Keys circus-sd sends with the same JSON type but another value, and why.
OTHER_VALUE = {
    ("globaloptions", "stats_endpoint"): "no circusd-stats: `\"\"` (none) rather than Circus's "
    "default address, where nothing listens unless `statsd` is on",
    ("list", "watchers"): "names as written, as `status` gives them (Circus lowercases them "
    "here only; both find a watcher whatever its case)",
    ("options", "PATH"): "environment values are expanded at each spawn (the processes get the "
    "same PATH, compared below): `options` shows them as written",
}


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"),
                       (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    assert value is None, value
    return "null"


def assert_like_circus(command: str, circus: Any, ours: Any, where: str = "") -> None:
    """`ours` has every key of `circus`, with its JSON type and (run directories aside) value,
    recursively, but for the differences named in NOT_SENT and OTHER_VALUE."""
    where = where or command
    if isinstance(circus, dict) and isinstance(ours, dict):
        for key, value in circus.items():
            if (command, key) in NOT_SENT:
                continue
            assert key in ours, f"{where}: circus-sd has no {key!r} (Circus: {value!r})"
            if (command, key) in OTHER_VALUE:
                assert _json_type(ours[key]) == _json_type(value), (where, key, ours[key])
                continue
            assert_like_circus(command, value, ours[key], f"{where}.{key}")
        return
    assert _json_type(ours) == _json_type(circus), (
        f"{where}: Circus sends {_json_type(circus)} {circus!r}, circus-sd {_json_type(ours)} "
        f"{ours!r}"
    )
    if isinstance(circus, list):
        assert len(ours) == len(circus), (where, circus, ours)
        for index, (theirs, mine) in enumerate(zip(circus, ours, strict=True)):
            assert_like_circus(command, theirs, mine, f"{where}[{index}]")
        return
    assert ours == circus, f"{where}: Circus sends {circus!r}, circus-sd {ours!r}"


# -- the two daemons -------------------------------------------------------------------------------


@dataclass
class Daemon:
    """One of the two daemons over one configuration: its directory (where its children report
    and its sockets live) and a control client."""

    name: str
    directory: Path
    control: ControlClient
    endpoint: str

    def ask(self, command: str, **properties: Any) -> dict[str, Any]:
        reply = self.control.request(command, timeout=10.0, **properties)
        reply.pop("id", None)
        reply.pop("time", None)
        return self._normalized(reply)

    def ask_ok(self, command: str, **properties: Any) -> dict[str, Any]:
        """`ask`, again while Circus's one-command-at-a-time lock refuses it (its start-up
        holds that lock for a `warmup_delay` after the last watcher started)."""

        def done() -> dict[str, Any] | None:
            reply = self.ask(command, **properties)
            busy = reply["status"] == "error" and "already running" in reply.get("reason", "")
            return None if busy else reply

        reply = wait_until(done, 10.0, f"{self.name}: {command} not refused as busy")
        assert reply["status"] == "ok", f"{self.name}: {command} {properties}: {reply}"
        return reply

    def _normalized(self, value: Any) -> Any:
        """Paths under the daemon's own directory spelled `<dir>`, for comparison."""
        if isinstance(value, dict):
            return {k: self._normalized(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._normalized(v) for v in value]
        if isinstance(value, str):
            return value.replace(str(self.directory), "<dir>")
        return value

    def first_spawns(self, names: list[str], since: dict[str, int]) -> list[str]:
        """`names` in the order their first process since `since` (history lengths) began."""
        started = {}
        for name in names:
            history = _history(self.directory, name)
            started[name] = history[since.get(name, 0)]["monotonic"]
        return sorted(names, key=started.__getitem__)

    def history_lengths(self, names: list[str]) -> dict[str, int]:
        return {name: len(_history(self.directory, name)) for name in names}


def _history(directory: Path, name: str) -> list[dict[str, Any]]:
    try:
        text = (directory / f"{name}.spawns").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1]]


class CircusDaemon:
    """circusd 0.19, started in `directory`; stopped by pid (SIGTERM, SIGKILL past a deadline)."""

    def __init__(self, directory: Path, config: Path) -> None:
        self.log = directory / "circusd.log"
        with open(self.log, "wb") as log, open(os.devnull, "rb") as stdin:
            self.popen = subprocess.Popen(
                [str(CIRCUSD), str(config)], cwd=directory, stdin=stdin, stdout=log,
                stderr=log,
            )

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
            raise AssertionError(
                f"circusd did not exit within {STOP_DEADLINE:g} s of SIGTERM"
            ) from None


Body = Callable[[Path], str]


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


@pytest.fixture
def both(circus: Circus, zmq_clients: Clients) -> Iterator[Callable[..., tuple[Daemon, Daemon]]]:
    """Start Circus and circus-sd on the same configuration: `[circus]` options and watcher
    sections written for a daemon's directory. Circus is stopped before the harness's check
    that nothing of the test is left running."""
    started: list[CircusDaemon] = []

    def start(body: Body, arbiter_options: str = "", running: tuple[str, ...] = ()) -> tuple[
        Daemon, Daemon
    ]:
        common = "multicast_endpoint =\n" + textwrap.dedent(arbiter_options)
        real_dir = circus.tmp / "real"
        real_dir.mkdir()
        endpoint = f"ipc://{real_dir}/control.sock"
        config = real_dir / "circus.ini"
        config.write_text(
            f"[circus]\nendpoint = {endpoint}\npubsub_endpoint = ipc://{real_dir}/events.sock\n"
            + common + "\n" + body(real_dir)
        )
        daemon = CircusDaemon(real_dir, config)
        started.append(daemon)
        circus.start(circus.write_config("[circus]\n" + common + "\n" + body(circus.tmp)))
        pair = (
            Daemon("circus", real_dir, zmq_clients.control(endpoint), endpoint),
            Daemon("circus-sd", circus.tmp, zmq_clients.control(control_endpoint(circus.tmp)),
                   control_endpoint(circus.tmp)),
        )
        for side in pair:
            wait_until(
                lambda side=side: all(_history(side.directory, n) for n in running),
                15.0,
                f"{side.name}: the first process of each of {running}",
                lambda: daemon.log.read_text(errors="replace")[-3000:] + circus.log_tails(),
            )
        return pair

    yield start
    for daemon in started:
        daemon.stop()


def compare(real: Daemon, ours: Daemon) -> dict[str, Any]:
    """Compare status, list, globaloptions and each watcher's options; Circus's replies."""
    replies = {}
    for command in ("status", "list", "globaloptions"):
        replies[command] = real.ask(command)
        assert_like_circus(command, replies[command], ours.ask(command))
    listed = ours.ask("list")["watchers"]
    assert sorted(name.lower() for name in listed) == replies["list"]["watchers"]
    assert sorted(listed) == sorted(ours.ask("status")["statuses"])
    for name in replies["list"]["watchers"]:
        theirs = real.ask("options", name=name)
        assert_like_circus("options", theirs, ours.ask("options", name=name), f"options {name}")
    return replies


def _sections(outdir: Path, watchers: dict[str, dict[str, Any]]) -> str:
    text = ""
    for name, options in watchers.items():
        options = {"cmd": report_command(outdir, name), "graceful_timeout": 3, **options}
        text += f"[watcher:{name}]\n"
        text += "".join(f"{key} = {value}\n" for key, value in options.items()) + "\n"
    return text


# -- the configurations ----------------------------------------------------------------------------

# File order, name order and priority order all differ; Circus starts by priority, then by name
# (as Python sorts strings: "Beta" before "alpha").
TIES = {"zeta": {}, "alpha": {}, "mid": {"priority": 5}, "Beta": {}, "top": {"priority": 10}}
TIES_ORDER = ["top", "mid", "Beta", "alpha", "zeta"]


def test_priority_ties_start_order_and_replies(both: Callable[..., tuple[Daemon, Daemon]]) -> None:
    # warmup_delay (an integer for Circus): watchers start well apart, so their processes'
    # start times tell the order.
    real, ours = both(lambda d: _sections(d, TIES), "warmup_delay = 1\n", tuple(TIES))
    names = list(TIES)

    assert real.first_spawns(names, {}) == TIES_ORDER
    assert ours.first_spawns(names, {}) == TIES_ORDER
    replies = compare(real, ours)
    assert replies["status"]["statuses"] == dict.fromkeys(TIES, "active")

    # `stop` and `start` of all: the same order as the daemon's own start-up.
    for side in (real, ours):
        side.ask_ok("stop", waiting=True)
    for side in (real, ours):
        assert set(side.ask("status")["statuses"].values()) == {"stopped"}, side.name
    marks = {side.name: side.history_lengths(names) for side in (real, ours)}
    for side in (real, ours):
        side.ask_ok("start", waiting=True)
    for side in (real, ours):
        wait_until(
            lambda side=side: all(
                len(_history(side.directory, n)) > marks[side.name][n] for n in names
            ),
            10.0,
            f"{side.name}: every watcher started again",
        )
        assert side.first_spawns(names, marks[side.name]) == TIES_ORDER, side.name
    compare(real, ours)


def test_a_stopped_watcher_on_start_and_reload(
    both: Callable[..., tuple[Daemon, Daemon]],
) -> None:
    watchers = {"web": {"numprocesses": 2}, "idle": {"autostart": "false"}}
    real, ours = both(lambda d: _sections(d, watchers), running=("web",))
    replies = compare(real, ours)
    assert replies["status"]["statuses"] == {"web": "active", "idle": "stopped"}

    # `start` of all starts what the daemon starts at start-up: not an autostart = false one.
    for side in (real, ours):
        side.ask_ok("start", waiting=True)
    compare(real, ours)
    assert real.ask("status")["statuses"] == {"web": "active", "idle": "stopped"}

    # `reload` of all: a stopped watcher is started, the others' processes replaced.
    for side in (real, ours):
        before = set(side.ask("list", name="web")["pids"])
        side.ask_ok("reload", waiting=True)
        wait_until(
            lambda side=side, before=before: len(set(side.ask("list", name="web")["pids"])
                                                 - before) == 2,
            10.0,
            f"{side.name}: two new processes of web",
        )
        wait_until(
            lambda side=side: _history(side.directory, "idle"), 10.0, f"{side.name}: idle spawned"
        )
    replies = compare(real, ours)
    assert replies["status"]["statuses"] == {"web": "active", "idle": "active"}

    # A named reload of a stopped watcher starts it too, and says which processes started.
    for side in (real, ours):
        side.ask_ok("stop", name="idle", waiting=True)
        info = side.ask_ok("reload", name="idle", waiting=True)["info"]
        assert (info["stopped"], info["kept"], len(info["started"])) == ([], [], 1), side.name
    compare(real, ours)


HOOK = """
def approve(watcher, arbiter, hook_name, **kwargs):
    return True
"""


def _rich(outdir: Path) -> str:
    (outdir / "hooks").mkdir(exist_ok=True)
    (outdir / "hooks" / "compat_hook.py").write_text(HOOK)
    web = {
        "numprocesses": 2,
        "warmup_delay": 0,
        "max_age": 600,
        "max_age_variance": 5,
        "use_sockets": "true",
        "stop_signal": "INT",
        "send_hup": "true",
        "copy_env": "false",
        "stdout_stream.class": "FileStream",
        "stdout_stream.filename": f"{outdir}/web.out",
        "stdout_stream.max_bytes": 100000,
        "stdout_stream.backup_count": 2,
        "stderr_stream.class": "FileStream",
        "stderr_stream.filename": f"{outdir}/web.err",
        "hooks.before_start": "compat_hook.approve",
        "custom_key": "kept for plugins",
    }
    # Not `shell = true`: Circus's stop may come before /bin/sh has forked the program, which
    # then outlives it.
    worker = {"singleton": "true", "working_dir": str(outdir), "shell": "false",
              "stop_children": "true", "close_child_stdout": "true", "max_retry": 3,
              "respawn": "true"}
    return (
        f"[socket:web]\npath = {outdir}/web.sock\n\n"
        + _sections(outdir, {"web": web, "worker": worker})
        + f"[env:web]\nPYTHONPATH = {outdir}/hooks\nGREETING = hello\n"
    )


def test_sockets_streams_hooks_env_and_free_options(
    both: Callable[..., tuple[Daemon, Daemon]],
) -> None:
    real, ours = both(_rich, running=("web", "worker"))

    replies = compare(real, ours)
    assert replies["status"]["statuses"] == {"web": "active", "worker": "active"}
    options = real.ask("options", name="web")["options"]
    # What the comparison covered: Circus's keys with the types named in issue 16.
    assert isinstance(options["max_age"], int) and isinstance(options["warmup_delay"], int)
    assert options["stdout_stream_conf"]["filename"] == "<dir>/web.out"
    assert {k: v for k, v in options["env"].items() if k != "__name__"} == {
        "PYTHONPATH": "<dir>/hooks", "GREETING": "hello"}
    assert options["custom_key"] == "kept for plugins"
    assert real.ask("options", name="worker")["options"]["working_dir"] == "<dir>"
    sockets = real.ask("listsockets")
    assert_like_circus("listsockets", {"sockets": [
        {k: v for k, v in s.items() if k != "fd"} for s in sockets["sockets"]
    ]}, {"sockets": [
        {k: v for k, v in s.items() if k != "fd"} for s in ours.ask("listsockets")["sockets"]
    ]})


def _as_users_write_it(outdir: Path) -> str:
    """What a user's file looks like: an include setting a key again, inline comments, an
    empty section, PATH extended, and a program that is not on this machine."""
    (outdir / "extra.ini").write_text(
        "[watcher:good]\nnumprocesses = 5\n\n[watcher:late]\n"
        f"cmd = {report_command(outdir, 'late')}\n"
    )
    return textwrap.dedent(f"""\
        [watcher:good]
        cmd = {report_command(outdir, "good")}
        numprocesses = 2        ; the include's 5 comes second
        graceful_timeout = 3

        [watcher:missing]
        cmd = {outdir}/no-such-program --serve
        max_retry = 1
        graceful_timeout = 3

        [watcher:empty]

        [env:good]
        PATH = $PATH:/opt/compat/bin
        """)


def test_a_users_file_with_an_include_comments_an_empty_section_and_a_missing_program(
    both: Callable[..., tuple[Daemon, Daemon]],
) -> None:
    real, ours = both(_as_users_write_it, "include = extra.ini\n", ("good", "late"))
    # The missing program fails its watcher alone, in both: stopped once its retries are spent.
    for side in (real, ours):
        wait_until(
            lambda side=side: side.ask("status", name="missing").get("status") == "stopped",
            20.0, f"{side.name}: the watcher of the missing program to stop",
        )
    replies = compare(real, ours)
    assert replies["status"]["statuses"] == {
        "good": "active", "late": "active", "missing": "stopped"}
    assert real.ask("options", name="good")["options"]["numprocesses"] == 2
    # What the processes got: the arbiter's PATH, then the directory added.
    paths = {side.name: _history(side.directory, "good")[0]["env"]["PATH"]
             for side in (real, ours)}
    assert paths["circus"] == paths["circus-sd"], paths
    assert paths["circus"].endswith(":/opt/compat/bin") and "$" not in paths["circus"]


def test_the_python_client_takes_circus_messages(
    both: Callable[..., tuple[Daemon, Daemon]],
) -> None:
    """circus_sd.client with Circus's calling convention, against both daemons alike."""
    real, ours = both(lambda d: _sections(d, {"web": {}}), running=("web",))

    for side in (real, ours):
        with CircusClient(side.endpoint, timeout=5.0) as client:
            by_message = client.call({"command": "status", "properties": {"name": "web"}})
            by_name = client.call("status", name="web")
            assert by_message["status"] == by_name["status"] == "active", side.name
            listed = client.send_message("list")
            assert listed["watchers"] == ["web"], side.name
            client.cast({"command": "incr", "properties": {"name": "web"}, "msg_type": "cast"})
            wait_until(
                lambda client=client: client.call({"command": "numprocesses",
                                                   "properties": {"name": "web"}})
                .get("numprocesses") == 2,
                10.0,
                f"{side.name}: the cast incr applied",
            )
            with pytest.raises(TypeError):
                client.call({"command": "list"}, name="web")
