"""Hooks: the watcher's gates on a fake clock, `hooks.NAME` parsing, and the hook runner."""

from __future__ import annotations

import asyncio
import random
import signal
import textwrap
import threading
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from circus_sd.actions import Action, CallHook, Publish, Signal, Spawn
from circus_sd.config import load_config
from circus_sd.config.model import HookSpec, WatcherConfig
from circus_sd.config.options import OptionValueError
from circus_sd.hooks import ArbiterView, HookRunner, WatcherView
from circus_sd.states import WatcherResult, WatcherState
from circus_sd.watcher import Watcher

# -- the watcher's gates -------------------------------------------------------------------------


class Gates:
    """Plays the arbiter for a watcher with hooks: keeps the hook calls for the test to answer."""

    def __init__(self, hooks: list[str], **options: Any) -> None:
        specs = {name: HookSpec("probe.hook") for name in hooks}
        config = WatcherConfig(name="web", cmd="/bin/true", hooks=MappingProxyType(specs),
                               **options)
        self.watcher = Watcher(config, rng=random.Random(1))
        self.now = 100.0
        self.calls: list[CallHook] = []
        self.spawns: list[Spawn] = []
        self.signals: list[Signal] = []
        self.events: list[str] = []
        self.next_pid = 500

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, CallHook):
                self.calls.append(action)
            elif isinstance(action, Spawn):
                self.spawns.append(action)
            elif isinstance(action, Signal):
                self.signals.append(action)
            elif isinstance(action, Publish):
                self.events.append(action.event)

    def hooks(self) -> list[str]:
        return [call.hook for call in self.calls]

    def answer(self, hook: str, approved: bool = True) -> None:
        """The first unanswered call of `hook` returns."""
        call = next(c for c in self.calls if c.hook == hook and c.token is not None)
        self.calls.remove(call)
        self.apply(self.watcher.hook_done(call.token, approved, self.now))

    def spawn_all(self) -> list[int]:
        pids = []
        while self.spawns:
            spawn = self.spawns.pop(0)
            pids.append(self.next_pid)
            self.apply(self.watcher.spawned(spawn.spawn_id, self.next_pid, self.now))
            self.next_pid += 1
        return pids

    def exit_all(self) -> None:
        for signalled in self.signals:
            self.apply(self.watcher.exited(signalled.pid, -signalled.signum, self.now))
        self.signals.clear()


def test_before_start_holds_the_spawns_until_it_returns() -> None:
    gates = Gates(["before_start"])
    gates.apply(gates.watcher.start(gates.now))
    assert gates.hooks() == ["before_start"] and gates.spawns == []
    assert not gates.watcher.start_settled
    gates.answer("before_start")
    assert [s.wid for s in gates.spawns] == [1]
    gates.spawn_all()
    assert gates.watcher.state is WatcherState.ACTIVE


def test_a_refused_before_start_fails_the_watcher_without_stop_hooks() -> None:
    gates = Gates(["before_start", "before_stop", "after_stop"])
    gates.apply(gates.watcher.start(gates.now))
    gates.answer("before_start", approved=False)
    assert gates.watcher.state is WatcherState.FAILED
    assert gates.watcher.result is WatcherResult.HOOK_ABORTED
    assert gates.watcher.reason == "start aborted by the before_start hook"
    assert gates.spawns == [] and gates.hooks() == []


def test_before_spawn_is_asked_for_each_process_and_a_no_stops_the_watcher() -> None:
    gates = Gates(["before_spawn", "before_stop", "after_stop"], numprocesses=2)
    gates.apply(gates.watcher.start(gates.now))
    assert gates.hooks() == ["before_spawn", "before_spawn"] and gates.spawns == []
    gates.answer("before_spawn")
    assert [s.wid for s in gates.spawns] == [1]
    (pid,) = gates.spawn_all()
    gates.answer("before_spawn", approved=False)
    assert gates.watcher.state is WatcherState.STOPPING
    # before_stop first: the processes are stopped once it has returned.
    assert gates.hooks() == ["before_stop"] and gates.signals == []
    gates.answer("before_stop")
    assert [s.pid for s in gates.signals] == [pid]
    gates.exit_all()
    assert gates.watcher.state is WatcherState.FAILED
    assert gates.hooks() == ["after_stop"]
    assert gates.calls[0].token is None  # a notification: nothing waits for it


def test_after_spawn_and_after_start_gate_active() -> None:
    gates = Gates(["after_spawn", "after_start"])
    gates.apply(gates.watcher.start(gates.now))
    (pid,) = gates.spawn_all()
    assert gates.calls[0].kwargs == {"pid": pid}
    assert gates.watcher.state is WatcherState.STARTING and not gates.watcher.start_settled
    gates.answer("after_spawn")
    assert gates.hooks() == ["after_start"]
    assert gates.watcher.state is WatcherState.STARTING
    gates.answer("after_start")
    assert gates.watcher.state is WatcherState.ACTIVE
    assert "start" in gates.events


@pytest.mark.parametrize("hook", ["after_spawn", "after_start"])
def test_a_refused_after_hook_stops_what_was_started(hook: str) -> None:
    gates = Gates(["after_spawn", "after_start"])
    gates.apply(gates.watcher.start(gates.now))
    (pid,) = gates.spawn_all()
    if hook == "after_start":
        gates.answer("after_spawn")
    gates.answer(hook, approved=False)
    assert [(s.pid, s.signum) for s in gates.signals] == [(pid, signal.SIGTERM)]
    gates.exit_all()
    assert gates.watcher.state is WatcherState.FAILED
    assert gates.watcher.reason == f"start aborted by the {hook} hook"


def test_a_stop_while_before_start_runs_ignores_its_late_answer() -> None:
    gates = Gates(["before_start"])
    gates.apply(gates.watcher.start(gates.now))
    gates.apply(gates.watcher.stop(gates.now))
    assert gates.watcher.state is WatcherState.STOPPED
    gates.answer("before_start")
    assert gates.spawns == [] and gates.watcher.state is WatcherState.STOPPED


def test_a_restart_calls_the_stop_then_the_start_hooks() -> None:
    gates = Gates(["before_start", "before_stop", "after_stop"])
    gates.apply(gates.watcher.start(gates.now))
    gates.answer("before_start")
    gates.spawn_all()
    gates.apply(gates.watcher.restart(gates.now))
    gates.answer("before_stop")
    gates.exit_all()
    assert gates.hooks() == ["after_stop", "before_start"]


# -- hooks.NAME in the config file ---------------------------------------------------------------


def test_hook_spec_parsing() -> None:
    assert HookSpec.parse("pkg.mod.fn") == HookSpec("pkg.mod.fn", False)
    assert HookSpec.parse(" pkg.mod.fn , true ") == HookSpec("pkg.mod.fn", True)
    assert str(HookSpec("a.b", True)) == "a.b, true"
    for bad in ("fn", "pkg.mod.fn, maybe", "pkg..fn"):
        with pytest.raises(OptionValueError):
            HookSpec.parse(bad)


def test_hooks_are_read_and_imported_from_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "my_hooks_for_config.py").write_text("def check(**kw):\n    return True\n")
    path = tmp_path / "circus.ini"
    path.write_text(textwrap.dedent("""
        [watcher:web]
        cmd = /bin/true
        hooks.before_start = my_hooks_for_config.check, true
        hooks.after_lunch = my_hooks_for_config.check
        hook_timeout = 2.5
    """))
    config, warnings = load_config(str(path), {"PATH": "/bin"})
    (web,) = config.watchers
    assert dict(web.hooks) == {"before_start": HookSpec("my_hooks_for_config.check", True)}
    assert web.hook_timeout == 2.5
    assert len(warnings) == 1 and "hooks.after_lunch: unknown hook (ignored" in str(warnings[0])


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_here.fn", "cannot import no_such_module_here.fn"),
        ("os.no_such_function", "os.no_such_function: module 'os' has no attribute"),
        ("os.sep", "os.sep is not callable"),
    ],
)
def test_a_hook_that_cannot_be_imported_yet_is_a_warning(
    tmp_path: Path, target: str, message: str
) -> None:
    # Imported again when it is due (it may be installed later): only that watcher fails.
    path = tmp_path / "circus.ini"
    path.write_text(f"[watcher:web]\ncmd = /bin/true\nhooks.after_stop = {target}\n")
    config, warnings = load_config(str(path), {"PATH": "/bin"})
    assert config.watchers[0].hooks["after_stop"].target == target
    (warning,) = warnings
    assert (warning.location.line if warning.location else None, warning.option) == (
        3, "hooks.after_stop"
    )
    assert message in warning.message


# -- the runner ----------------------------------------------------------------------------------

VIEW = WatcherView("web", MappingProxyType({}), (1,), 1, "active")


def run_hooks(*calls: tuple[Any, str, float]) -> tuple[list[Any], list[tuple[str, str, Any]]]:
    """Queue hook calls (callable, hook name, timeout) for one watcher; outcomes and events."""
    events: list[tuple[str, str, Any]] = []

    def publish(watcher: str, event: str, payload: Any) -> None:
        events.append((watcher, event, payload))

    async def main() -> list[Any]:
        runner = HookRunner(publish)
        futures = []
        for index, (function, hook, timeout) in enumerate(calls):
            spec = HookSpec(f"m.f{index}")
            runner._resolved[spec.target] = function  # as if imported

            def job(spec: HookSpec = spec, hook: str = hook, timeout: float = timeout) -> Any:
                return runner.call(spec, hook, {}, timeout, VIEW, ArbiterView(["web"], None))

            futures.append(runner.queue("web", job))
        return list(await asyncio.gather(*futures))

    return asyncio.run(main()), events


def test_hooks_of_a_watcher_run_one_at_a_time_in_order() -> None:
    order: list[str] = []

    def slow(**kw: Any) -> bool:
        time.sleep(0.05)
        order.append(kw["hook_name"])
        return True

    async def quick(**kw: Any) -> None:
        order.append(kw["hook_name"])

    outcomes, events = run_hooks((slow, "before_stop", 5), (quick, "after_stop", 5))
    assert order == ["before_stop", "after_stop"]
    assert [o.approved for o in outcomes] == [True, True]
    assert [(e[1], e[2]["name"]) for e in events] == [
        ("hook_success", "before_stop"), ("hook_success", "after_stop")
    ]


def test_false_refuses_a_failure_refuses_unless_ignored_and_a_deadline_is_a_failure() -> None:
    release = threading.Event()

    def refuse(**kw: Any) -> bool:
        return False

    def broken(**kw: Any) -> None:
        raise ValueError("no")

    def stuck(**kw: Any) -> None:
        release.wait(10)

    def leaving(**kw: Any) -> None:
        raise SystemExit(3)

    try:
        outcomes, events = run_hooks(
            (refuse, "before_start", 5),
            (broken, "after_spawn", 5),
            (broken, "before_signal", 5),  # Circus ignores its failures
            (stuck, "after_start", 0.2),
            (leaving, "before_spawn", 5),
        )
    finally:
        release.set()
    assert [(o.approved, o.error) for o in outcomes] == [
        (False, None),
        (False, "ValueError: no"),
        (True, "ValueError: no"),
        (False, "did not return within 0.2 s (hook_timeout): counted as failed"),
        (False, "HookFailed: raised SystemExit: 3"),
    ]
    assert [e[1] for e in events] == ["hook_success"] + ["hook_failure"] * 4
