"""What each control command does to the arbiter: one handler per registry entry.

`@handles("name")` binds a handler to its registry command (an unknown or twice-bound name
fails at import); the server checks a request's properties against the command's parameters
(param_checks.py) before calling it. A handler validates the rest synchronously (so errors
reach even a client that does not wait) and then either returns its result, or a `Deferred`
holding the work for commands that Circus runs asynchronously: the server awaits it only when
the request says `waiting`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import itertools
import os
import re
import shlex
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from circus_sd.access import Tier
from circus_sd.arbiter import Arbiter, Request
from circus_sd.config.loader import ConfigError
from circus_sd.config.model import WatcherConfig
from circus_sd.config.watcher_checks import WatcherContext
from circus_sd.control.param_checks import prop_signal
from circus_sd.control.protocol import (
    CommandError,
    Errno,
    prop_bool,
    prop_int,
    prop_required_str,
    prop_seconds,
    prop_str,
)
from circus_sd.control.registry import COMMANDS
from circus_sd.control.watcher_options import (
    SECRET_KEYS,
    apply_options,
    option_values,
    parse_options,
)
from circus_sd.process_bound import ProcessBoundError
from circus_sd.start_order import DependencyError, by_priority, start_order
from circus_sd.states import ProcessState


@dataclasses.dataclass
class Deferred:
    """Work a command does after validation; its result is sent only to a waiting client.

    `always`: the reply is the work's result (e.g. `stats` with extended_stats hooks), awaited
    whether or not the request says `waiting`.
    `carried`: what remains of the work, once it began, is in one watcher's state (a stop
    under way, its deadline), which a re-execution carries: the work may be cut by one. Else
    a re-execution waits for it (a reload, a restart: steps the execve would cut halfway).
    """

    work: Awaitable[dict[str, Any] | None]
    always: bool = False
    carried: bool = False


Result = dict[str, Any] | None | Deferred
# (arbiter, request properties, the caller's tier): the server has checked the command's own
# tier; a handler whose work depends on what is asked (`set`'s options) checks the rest.
Handler = Callable[[Arbiter, dict[str, Any], Tier], Result]
HANDLERS: dict[str, Handler] = {}


@contextlib.contextmanager
def _bound_refused() -> Iterator[None]:
    """Past max_processes: the error reply names the bound (process_bound knows no protocol)."""
    try:
        yield
    except ProcessBoundError as exc:
        raise CommandError(exc.reason) from None


def handles(name: str) -> Callable[[Handler], Handler]:
    """Bind the decorated function to the registry's command `name`, once."""
    if name not in COMMANDS:
        raise LookupError(f"a handler for {name!r}, which the command registry does not declare")
    if name in HANDLERS:
        raise LookupError(f"a second handler for {name!r}")

    def register(handler: Handler) -> Handler:
        HANDLERS[name] = handler
        return handler

    return register


# -- helpers ---------------------------------------------------------------------------------------


def _watcher_name(arbiter: Arbiter, props: dict[str, Any]) -> str:
    name = prop_required_str(props, "name")
    if name in arbiter.watchers:
        return name
    for candidate in arbiter.watchers:
        if candidate.lower() == name.lower():
            return candidate
    raise CommandError(f"program {name} not found")


def _matching(arbiter: Arbiter, props: dict[str, Any]) -> list[str]:
    """Watchers named by `name` under `match` (glob by default, as in Circus); all if no name."""
    name = prop_str(props, "name")
    if not name:
        return list(arbiter.watchers)
    match = prop_str(props, "match", "glob") or "glob"
    if match == "simple":
        return [_watcher_name(arbiter, props)]
    if match == "glob":
        found = [w for w in arbiter.watchers if fnmatch.fnmatchcase(w.lower(), name.lower())]
    elif match == "regex":
        try:
            pattern = re.compile(name, re.IGNORECASE)
        except re.error as exc:
            raise CommandError(f"invalid regex {name!r}: {exc}") from None
        # As Circus: re.match, anchored at the start only ("web" matches "web-1").
        found = [w for w in arbiter.watchers if pattern.match(w)]
    else:
        raise CommandError(f"match: expected simple, glob or regex, got {match!r}")
    if not found:
        raise CommandError(f"program {name} not found")
    return found


async def _each(arbiter: Arbiter, names: list[str], work: Callable[[str], Awaitable[None]]) -> None:
    for name in names:
        await _locked(arbiter, name, work)


async def _locked(arbiter: Arbiter, name: str, work: Callable[[str], Awaitable[None]]) -> None:
    async with arbiter.lock(name):
        if name in arbiter.watchers:
            await work(name)


def _start_sequence(arbiter: Arbiter, names: list[str]) -> list[str]:
    """`names` in the order the daemon starts watchers (arbiter.start_all): priority, highest
    first, and `after`; among equal priorities Circus's order, by name."""
    every = [w.config for w in arbiter.watchers.values()]
    try:
        ordered = start_order(every)
    except DependencyError:  # an `add`ed watcher's `after` naming no watcher: priority alone
        ordered = by_priority(every)
    wanted = set(names)
    return [c.name for c in ordered if c.name in wanted]


async def _start_several(arbiter: Arbiter, names: list[str], every: bool) -> None:
    """Several watchers one after another in start order, `warmup_delay` apart, as the
    daemon's own start-up; `start` of all (`every`), as Circus's, starts only the `autostart`
    ones, while a pattern starts what it matches."""
    delay = arbiter.config.arbiter.warmup_delay
    due = [
        n for n in _start_sequence(arbiter, names)
        if not every or arbiter.watchers[n].config.autostart
    ]
    for index, name in enumerate(due):
        if index and delay:
            await asyncio.sleep(delay)
        await _locked(arbiter, name, arbiter.start_watcher)


async def _stop_several(arbiter: Arbiter, names: list[str]) -> None:
    """In reverse start order; watchers of equal priority together (as arbiter.stop_all)."""
    ordered = reversed(_start_sequence(arbiter, names))
    for _priority, group in itertools.groupby(
        ordered, key=lambda n: arbiter.watchers[n].config.priority
    ):
        await asyncio.gather(*(_locked(arbiter, n, arbiter.stop_watcher) for n in group))


# -- lifecycle ---------------------------------------------------------------------------------


@handles("start")
def start(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    names = _matching(arbiter, props)

    async def work() -> dict[str, Any] | None:
        if not _one_named(arbiter, props, names):
            await _start_several(arbiter, names, every=props.get("name") is None)
            return None
        before = set(arbiter.watchers[names[0]].pids)
        await _locked(arbiter, names[0], arbiter.start_watcher)
        now = set(arbiter.watchers[names[0]].pids)
        return {"info": {"started": sorted(now - before), "kept": sorted(now & before)}}

    return Deferred(work(), carried=len(names) == 1)


@handles("stop")
def stop(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    names = _matching(arbiter, props)

    async def work() -> None:
        await _stop_several(arbiter, names)

    return Deferred(work(), carried=len(names) == 1)


@handles("restart")
def restart(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    names = _matching(arbiter, props)

    async def work() -> dict[str, Any] | None:
        before = {n: set(arbiter.watchers[n].pids) for n in names}
        await _each(arbiter, _start_sequence(arbiter, names), arbiter.restart_watcher)
        return _replaced(arbiter, props, names, before)

    return Deferred(work())


@handles("reload")
def reload(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    names = _matching(arbiter, props)
    graceful = prop_bool(props, "graceful", True)
    sequential = prop_bool(props, "sequential", False)

    async def work() -> dict[str, Any] | None:
        before = {n: set(arbiter.watchers[n].pids) for n in names}

        async def one(name: str) -> None:
            await arbiter.reload_watcher(name, graceful, sequential)

        # Each in start order, stopped ones too (they are started, as Circus does).
        await _each(arbiter, _start_sequence(arbiter, names), one)
        return _replaced(arbiter, props, names, before)

    return Deferred(work())


def _one_named(arbiter: Arbiter, props: dict[str, Any], names: list[str]) -> bool:
    """Circus answers `info` only when a name was given and it matched one watcher."""
    return bool(prop_str(props, "name")) and len(names) == 1 and names[0] in arbiter.watchers


def _replaced(
    arbiter: Arbiter, props: dict[str, Any], names: list[str], before: dict[str, set[int]]
) -> dict[str, Any] | None:
    if not _one_named(arbiter, props, names):
        return None
    now = set(arbiter.watchers[names[0]].pids)
    old = before[names[0]]
    return {
        "info": {
            "stopped": sorted(old - now),
            "started": sorted(now - old),
            "kept": sorted(now & old),
        }
    }


@handles("reloadconfig")
def reloadconfig(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    # The file is read and checked now, so that a refused file is the reply's error whether the
    # client waits or not; applying it (stops, starts, binds) is the deferred part.
    try:
        read = arbiter.read_config()
    except ConfigError as exc:
        raise CommandError(f"reloadconfig refused: {exc}") from None

    async def work() -> dict[str, Any] | None:
        error = await arbiter.reload_config(read)
        if error is not None:
            raise CommandError(f"reloadconfig refused: {error}")
        return None

    return Deferred(work())


@handles("reexec")
def reexec(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    # Checked first (the installed code reads the state, as a separate process): a refusal is
    # the reply. Then the reply goes out, and the switch follows in the loop.
    async def work() -> dict[str, Any]:
        refusal = await arbiter.check_reexec()
        if refusal is not None:
            raise CommandError(f"reexec refused: {refusal}")
        arbiter.request(Request.REEXEC)
        return {"generation": arbiter.generation + 1}

    return Deferred(work(), always=True)


@handles("quit")
def quit_(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    async def work() -> None:
        arbiter.request(Request.STOP)
        await arbiter.watchers_stopped()

    return Deferred(work())


@handles("incr")
def incr(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    return _resize(arbiter, props, +1)


@handles("decr")
def decr(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    return _resize(arbiter, props, -1)


def _resize(arbiter: Arbiter, props: dict[str, Any], sign: int) -> Result:
    name = _watcher_name(arbiter, props)
    nb = prop_int(props, "nb", 1)
    assert nb is not None
    if nb < 0:
        raise CommandError("nb: expected a number >= 0")
    watcher = arbiter.watchers[name]
    if watcher.config.singleton:
        return {"numprocesses": watcher.config.target_processes, "singleton": True}
    if sign > 0:
        # Checked now (and again by the work), so that a client that does not wait hears of a
        # refusal too: past max_processes, ProcessBoundError is the error reply.
        grown = watcher.config.numprocesses + nb
        with _bound_refused():
            arbiter.check_process_bound(dataclasses.replace(watcher.config, numprocesses=grown))

    async def work() -> dict[str, Any]:
        async with arbiter.lock(name):
            target = max(0, watcher.config.numprocesses + sign * nb)
            with _bound_refused():
                await arbiter.resize(name, target)
            return {"numprocesses": watcher.config.numprocesses}

    return Deferred(work(), carried=True)


@handles("kill")
def kill(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    name = _watcher_name(arbiter, props)
    pid = prop_int(props, "pid")
    signum = prop_signal(props, "signum") if props.get("signum") is not None else None
    timeout = prop_seconds(props, "graceful_timeout")
    if pid is not None and pid not in arbiter.watchers[name].pids:
        raise CommandError(f"process {pid} not found in {name}")

    async def work() -> None:
        async with arbiter.lock(name):
            await arbiter.kill_processes(name, pid, signum, timeout)

    return Deferred(work())


@handles("signal")
def signal_(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    name = _watcher_name(arbiter, props)
    signum = prop_signal(props, "signum")
    pid = prop_int(props, "pid")
    # Circus reads `childpid`; its docs and ResourceWatcher send `child_pid`: accept both.
    child = prop_int(props, "childpid", prop_int(props, "child_pid"))
    children = prop_bool(props, "children") or prop_bool(props, "recursive")
    if child is not None:
        return _signal_child(arbiter, name, pid, child, signum)
    if pid is not None and pid not in arbiter.watchers[name].pids:
        raise CommandError(f"process {pid} not found in {name}")
    arbiter.signal_processes(name, signum, pid, tree=children)
    return None


def _signal_child(arbiter: Arbiter, name: str, pid: int | None, child: int, signum: int) -> Result:
    if not arbiter.signal_descendant(name, pid, child, signum):
        raise CommandError(f"child {child} not found under {name}")
    return None


# -- changing what runs ------------------------------------------------------------------------


@handles("add")
def add(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    name = prop_required_str(props, "name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise CommandError(f"{name!r}: a watcher name is made of letters, digits, _ . -")
    if any(w.lower() == name.lower() for w in arbiter.watchers):
        raise CommandError(f"watcher {name} already exists")
    cmd = prop_required_str(props, "cmd")
    args = props.get("args", "")
    options = props.get("options") or {}
    if not isinstance(options, dict):
        raise CommandError("options: expected an object")
    changes = parse_options(options, caller)
    config = apply_options(
        WatcherConfig(name=name, cmd=cmd, args=_args_text(args)), changes, _context(arbiter)
    )
    with _bound_refused():
        arbiter.check_process_bound(config)  # refused now, even to a client that does not wait
    start_now = prop_bool(props, "start")

    async def work() -> None:
        async with arbiter.lock(name):
            with _bound_refused():
                await arbiter.add_watcher(config, start_now)

    return Deferred(work())


def _context(arbiter: Arbiter) -> WatcherContext:
    """What `add` and `set` check a watcher against, as the config file's loader does."""
    return WatcherContext.of_this_process(
        [s.name for s in arbiter.config.sockets], os.path.dirname(arbiter.config.path)
    )


def _args_text(args: Any) -> str:
    if isinstance(args, list):
        return shlex.join(str(a) for a in args)
    if args is None:
        return ""
    return str(args)


@handles("rm")
def rm(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    name = _watcher_name(arbiter, props)
    nostop = prop_bool(props, "nostop")

    async def work() -> None:
        async with arbiter.lock(name):
            if name in arbiter.watchers:
                await arbiter.remove_watcher(name, stop=not nostop)

    return Deferred(work())


@handles("set")
def set_(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    name = _watcher_name(arbiter, props)
    options = props.get("options")
    if not isinstance(options, dict) or not options:
        raise CommandError("options: expected an object of option: value")
    # One parse: the access check and the change see the same options (README: Security model).
    changes = parse_options(options, caller)
    config = apply_options(arbiter.watchers[name].config, changes, _context(arbiter))
    with _bound_refused():
        arbiter.check_process_bound(config)  # refused now, even to a client that does not wait

    async def work() -> None:
        async with arbiter.lock(name):
            with _bound_refused():
                await arbiter.change_watcher(config)

    return Deferred(work())


# -- looking -----------------------------------------------------------------------------------


@handles("list")
def list_(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    if prop_str(props, "name"):
        return {"pids": arbiter.watchers[_watcher_name(arbiter, props)].pids}
    return {"watchers": sorted(arbiter.watchers)}


@handles("listsockets")
def listsockets(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    # Circus's entries (fd, name, backlog, host and port or path), plus family, type, systemd.
    return {"sockets": arbiter.sockets.describe()}


@handles("status")
def status(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    # Circus's reply; circus-sd's `details` (pids included: they grow with N) when asked for.
    with_details = prop_bool(props, "details")
    if prop_str(props, "name"):
        name = _watcher_name(arbiter, props)
        # Circus overwrites the envelope's "status" with the watcher's.
        reply: dict[str, Any] = {"status": arbiter.watchers[name].state.circus_status}
        if with_details:
            reply["details"] = {name: _details(arbiter, name)}
        return reply
    reply = {"statuses": {n: w.state.circus_status for n, w in sorted(arbiter.watchers.items())}}
    if with_details:
        reply["details"] = {n: _details(arbiter, n) for n in sorted(arbiter.watchers)}
    return reply


def _details(arbiter: Arbiter, name: str) -> dict[str, Any]:
    watcher = arbiter.watchers[name]
    started = arbiter.process_start_times(name)
    details: dict[str, Any] = {
        "state": watcher.state.value,
        "pids": watcher.pids,
        "numprocesses": watcher.config.target_processes,
        "restarts": watcher.restarts,
        "reason": watcher.reason or None,
        "started": min(started) if started else None,
        # Spawns that failed for lack of resources (not counted as failures), and why, while
        # some are still waiting.
        "deferred_spawns": watcher.deferred_spawns,
        "shortage": watcher.shortage,
    }
    if watcher.config.awaits_readiness:
        # Readiness (READY=1 or ready_log_line) and the last STATUS= of each process.
        details["processes"] = [
            {"pid": p.pid, "wid": p.wid, "ready": p.ready, "status": p.status or None}
            for p in sorted(watcher.processes.values(), key=lambda p: p.wid)
            if p.pid is not None and p.state is ProcessState.RUNNING
        ]
    return details


@handles("numprocesses")
def numprocesses(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    if prop_str(props, "name"):
        name = _watcher_name(arbiter, props)
        return {"numprocesses": len(arbiter.watchers[name].processes), "watcher_name": name}
    return {"numprocesses": sum(len(w.processes) for w in arbiter.watchers.values())}


@handles("numwatchers")
def numwatchers(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    return {"numwatchers": len(arbiter.watchers)}


@handles("options")
def options(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    name = _watcher_name(arbiter, props)
    return {"options": option_values(arbiter.watchers[name].config, caller)}


@handles("get")
def get(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    name = _watcher_name(arbiter, props)
    keys = props.get("keys")
    if not isinstance(keys, list) or not keys:
        raise CommandError("keys: expected a list of option names")
    values = option_values(arbiter.watchers[name].config, caller)
    result = {}
    for key in keys:
        if str(key) not in values:
            if str(key) in SECRET_KEYS:
                raise CommandError(
                    f"access denied: only root or the arbiter's user may read {key}",
                    Errno.ACCESS_DENIED,
                )
            raise CommandError(f"{key}: not a known option")
        result[str(key)] = values[str(key)]
    return {"options": result}


@handles("globaloptions")
def globaloptions(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    values = arbiter.global_options()
    key = prop_str(props, "option")
    if key:
        if key not in values:
            raise CommandError(f"{key}: not a known option")
        return {"options": {key: values[key]}}
    return {"options": values}


@handles("stats")
def stats(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    extended = prop_bool(props, "extended")
    pid = prop_int(props, "process")
    if prop_str(props, "name"):
        name = _watcher_name(arbiter, props)
        if pid is not None:
            if pid not in arbiter.watchers[name].pids:
                raise CommandError(f"process {pid} not found in {name}")
            one = {name: {str(pid): arbiter.process_info(pid, extended)}}
            return _extended(
                arbiter, extended, one, lambda i: {"process": pid, "info": i[name][str(pid)]}
            )
        processes = _watcher_stats(arbiter, name, extended)
        reply: dict[str, Any] = {"name": name, "dropped": _dropped(arbiter, name)}
        # circus-sd: the watcher's cgroup figures from the kernel, when cgroups are on.
        cgroup = arbiter.cgroup_stats(name)
        if cgroup is not None:
            reply["cgroup"] = cgroup
        return _extended(
            arbiter, extended, {name: processes}, lambda i: {**reply, "info": i[name]}
        )
    infos = {n: _watcher_stats(arbiter, n, extended) for n in sorted(arbiter.watchers)}
    # circus-sd: the sockets too, with the accept queue of TCP listeners; output lines dropped.
    sockets = arbiter.sockets.stats()
    dropped = {n: _dropped(arbiter, n) for n in sorted(arbiter.watchers)}
    return _extended(
        arbiter, extended, infos, lambda i: {"infos": i, "sockets": sockets, "dropped": dropped}
    )


def _dropped(arbiter: Arbiter, name: str) -> dict[str, int]:
    """Lines (and bytes) of a watcher's output dropped since the arbiter started."""
    lines, size = arbiter.dropped_output(name)
    return {"lines": lines, "bytes": size}


def _watcher_stats(arbiter: Arbiter, name: str, extended: bool) -> dict[str, Any]:
    return {str(pid): arbiter.process_info(pid, extended) for pid in arbiter.watchers[name].pids}


def _extended(
    arbiter: Arbiter,
    extended: bool,
    infos: dict[str, dict[str, Any]],
    reply: Callable[[dict[str, dict[str, Any]]], dict[str, Any]],
) -> Result:
    """With `extended`, each process's stats go through its watcher's extended_stats hook, as in
    Circus; hooks run off the loop, so the reply waits for them."""
    hooked = [
        name
        for name in infos
        if extended and name in arbiter.watchers
        and "extended_stats" in arbiter.watchers[name].config.hooks
    ]
    if not hooked:
        return reply(infos)

    async def work() -> dict[str, Any]:
        for name in hooked:
            for pid, info in infos[name].items():
                infos[name][pid] = await arbiter.extended_stats(name, int(pid), info)
        return reply(infos)

    return Deferred(work(), always=True)


@handles("dstats")
def dstats(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    from circus_sd.logging_setup import dropped_log_records

    return {
        "info": arbiter.process_info(os.getpid(), extended=False),
        # The arbiter's own log records its output did not take in time (logging_setup).
        "log_records_dropped": dropped_log_records(),
    }


@handles("freeze")
def freeze(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    arbiter.freeze(_watcher_name(arbiter, props), True)
    return None


@handles("thaw")
def thaw(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    arbiter.freeze(_watcher_name(arbiter, props), False)
    return None


_EVENT_PART = re.compile(r"[A-Za-z0-9_-]+")


@handles("publish")
def publish(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    # Only under plugin.*: a client cannot pass off its events as the arbiter's watcher.* ones.
    name = prop_required_str(props, "name")
    event = prop_required_str(props, "event")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
        raise CommandError(f"name: {name!r} is not a plugin name (letters, digits, _ . : -)")
    if not _EVENT_PART.fullmatch(event):
        raise CommandError(f"event: {event!r} is not an event name (letters, digits, _ -)")
    data = props.get("data", {})
    if not isinstance(data, dict):
        raise CommandError("data: expected an object")
    arbiter.emit(f"plugin.{name}.{event}", data)
    return None


@handles("ipython")
def ipython(arbiter: Arbiter, props: dict[str, Any], caller: Tier) -> Result:
    raise CommandError("ipython is not supported by circus-sd")
