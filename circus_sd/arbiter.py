"""The arbiter: one asyncio loop that executes the watchers' decisions and feeds them events."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import gc
import itertools
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Protocol

from circus_sd import __version__
from circus_sd.actions import (
    Action,
    CallHook,
    CancelTimer,
    Log,
    Publish,
    Signal,
    Spawn,
    StartTimer,
)
from circus_sd.cgroup_supervision import CgroupSupervision
from circus_sd.cgroups import Cgroups
from circus_sd.config.changes import changed_options, needs_restart
from circus_sd.config.loader import ConfigError, ConfigWarning
from circus_sd.config.model import Config, WatcherConfig, hook_search_path
from circus_sd.config.process_env import ChildDefaults
from circus_sd.hooks import ArbiterView, HookRunner
from circus_sd.journal_log import about
from circus_sd.launcher import Launcher
from circus_sd.leftovers import Leftovers
from circus_sd.message_ids import MessageId
from circus_sd.orphans import Orphans
from circus_sd.output.lines import Buffer
from circus_sd.output.ready_line import ReadyLineSearch
from circus_sd.output.router import OutputRouter
from circus_sd.output.sink import Origin
from circus_sd.process_bound import process_bound
from circus_sd.process_stats import ProcessStats
from circus_sd.shared_warnings import SharedWarnings
from circus_sd.signal_mask import HANDLED_SIGNALS, handled_signals_blocked
from circus_sd.sockets import ListeningSockets, SocketError
from circus_sd.spawner import Spawner
from circus_sd.start_order import by_priority, start_order
from circus_sd.states import (
    HALTED_STATES,
    RUNNING_STATES,
    ProcessState,
    Want,
    WatcherState,
)
from circus_sd.status_line import status_line
from circus_sd.systemd_notify import SystemdNotifier
from circus_sd.timers import Timers
from circus_sd.watcher import Watcher
from circus_sd.watcher_hooks import WatcherHooks

if TYPE_CHECKING:
    from circus_sd import reload_plan
    from circus_sd.handover import Handover
    from circus_sd.pidfile import PidFile

log = logging.getLogger("circus_sd")

ConfigLoader = Callable[[str], tuple[Config, list[ConfigWarning]]]
EventListener = Callable[[str, dict[str, Any]], None]
# How long a re-execution waits for hooks in flight and spawns to settle, beyond hook_timeout.
SETTLE_TIMEOUT = 5.0
# ... and for commands at work when it began (a reload that stops a watcher gracefully).
COMMANDS_TIMEOUT = 120.0


class Request(enum.Enum):
    """What a signal handler may ask of the loop; handlers do nothing but enqueue these."""

    STOP = "stop"
    RELOAD = "reload"
    REEXEC = "reexec"  # checked already (check_reexec): switch to the installed program


def topic_name(watcher: str) -> str:
    """Circus's event topic spelling of a watcher name."""
    return watcher.lower().replace(" ", "_")


def _quiet_signal_wakeup() -> None:
    """Keep asyncio's signal wakeup fd, without CPython's report of a write to it that failed.

    A thousand children exiting at once fill that socket with SIGCHLD bytes. Nothing is lost
    by it (exits come from pidfds, strays are reaped at the next SIGCHLD that gets through),
    but for each failed write CPython's C signal handler queues a report through a lock that
    the interrupted thread may hold: the arbiter deadlocked in its stop of 1,000 (and printed
    thousands of tracebacks before). The same fd is set again with the report off, at start-up
    before any watcher runs; the signals are held in this thread meanwhile (another thread
    taking one in those microseconds would find no wakeup fd)."""
    with handled_signals_blocked():
        fd = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(fd, warn_on_full_buffer=False)


class ControlLink(Protocol):
    """The control server, as a re-execution needs it (cli.py runs it)."""

    def open(self, held_locks: dict[str, int]) -> None: ...

    async def close(self, keep_locks: bool = False) -> dict[str, int]: ...

    def commands_in_flight(self) -> list[str]: ...

    async def wait_for_commands(self, timeout: float) -> list[str]: ...


class Arbiter:
    """Runs watchers: executes their decisions (spawn, signal, timers, hooks, events) and feeds
    them what happens (spawned, exited, notified, timers, hooks' answers)."""

    def __init__(
        self,
        config: Config,
        spawner: Spawner,
        loader: ConfigLoader,
        defaults: ChildDefaults | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        notifier: SystemdNotifier | None = None,
        cgroups: Cgroups | None = None,
        sockets: ListeningSockets | None = None,
        handover: Handover | None = None,
    ) -> None:
        self.config = config
        self._loader = loader
        self._clock = clock
        self._rng = rng or random.Random()
        self.notifier = notifier or SystemdNotifier({})
        self.listeners: list[EventListener] = []
        # [socket:NAME] sections: bound (or adopted from systemd) at start, held until exit.
        self.sockets = sockets or ListeningSockets()
        # Per-watcher cgroups when a delegated cgroup v2 tree was found (None: process groups).
        self.cgroups = (
            CgroupSupervision(cgroups, self._on_leaf_empty, self._on_oom) if cgroups else None
        )
        # Child output (circus_sd/output): pipes and sinks.
        self.output = OutputRouter(self.publish)
        self.output.taps.append(self._match_ready_line)
        self._ready_search = ReadyLineSearch()
        # Without cgroups: orphans adopted from workers' sessions, stopped with their watcher.
        leftovers = self._leftovers = None if self.cgroups else Leftovers()
        self.launcher = Launcher(
            spawner,
            self.output,
            self.sockets,
            self.cgroups,
            leftovers,
            defaults or ChildDefaults.capture(),
            self,
        )
        # The file names the arbiter to its children (adoption.py): one arbiter runs a file.
        self.launcher.identity = os.path.realpath(config.path)
        self._stats = ProcessStats()
        self._shared_warnings = SharedWarnings()
        self.launcher.forgotten += [self._ready_search.forget, self._stats.forget]
        self.spawner = spawner
        self.orphans = Orphans(
            leftovers, self.launcher.table.pids, lambda: spawner.pids, self.publish
        )
        spawner.after_loss = self.orphans.kill_lost_clones
        self.hooks = WatcherHooks(HookRunner(self.publish), self._arbiter_view, self._search_path)
        self.last_error = ""
        self._status_scheduled = False
        self.watchers: dict[str, Watcher] = {}
        # A re-execution: the watchers as the previous program left them (run() takes the rest).
        self._handover = handover
        if handover is not None:
            self.watchers = handover.watchers
            for watcher in self.watchers.values():
                self._configure_cgroup(watcher.config)
        else:
            for watcher_config in config.watchers:
                self._add_watcher(watcher_config)
        self._timers = Timers(self._on_timer)
        # What carries out each kind of action a watcher returns.
        self._executors: dict[type, Callable[[str, Any], None]] = {
            Spawn: self._execute_spawn,
            Signal: self._execute_signal,
            StartTimer: self._execute_start_timer,
            CancelTimer: self._execute_cancel_timer,
            Publish: self._execute_publish,
            CallHook: self._call_hook,
            Log: self._execute_log,
        }
        # Predicates awaited, by the watcher whose actions can make them true (None: any).
        self._waiters: dict[str | None, list[tuple[Callable[[], bool], asyncio.Future[None]]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._requests: asyncio.Queue[Request] = asyncio.Queue()
        self._child_exited = asyncio.Event()
        self._stop_asked = asyncio.Event()
        self._exit_status = 0
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.started_at = handover.started_at if handover is not None else time.time()
        # Filled by the control server: the endpoints it bound.
        self.endpoints: dict[str, str] = {}
        # Re-execution: how many this arbiter went through, its control server (set by whoever
        # runs it), the pidfile to carry.
        self.generation = handover.generation if handover is not None else 0
        self._crash_reexecs = list(handover.crash_reexecs) if handover is not None else []
        self.control: ControlLink | None = None
        self.pidfile: PidFile | None = None
        self._switching = False
        self._after_switch: list[Request] = []
        # The most processes of all watchers together; computed once, at start.
        self.process_bound = process_bound(config.arbiter.max_processes)

    # -- life of the arbiter ---------------------------------------------------------------------

    async def run(self) -> int:
        """Start the watchers, serve signals until told to stop, stop everything. Exit status."""
        loop = self._loop = asyncio.get_running_loop()
        self._timers.attach(loop)
        self.launcher.attach(loop)
        self.orphans.attach(loop)
        if self.cgroups is not None:
            self.cgroups.attach(loop)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(signum, self.request, Request.STOP)
        loop.add_signal_handler(signal.SIGHUP, self.request, Request.RELOAD)
        loop.add_signal_handler(signal.SIGCHLD, self._on_sigchld)
        _quiet_signal_wakeup()
        # A previous program of this arbiter blocked them across its execve: those that came
        # meanwhile are delivered now, to the handlers above.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        try:
            try:
                await self._run_until_stop()
            except Exception as exc:
                # Escaped the loop: re-executed with the state (processes kept), if allowed.
                await self._reexec_after_crash(exc)
                raise
            if self._exit_status and not self._stopping:
                return self._exit_status
            log.info("stopping")
            self.notifier.stopping()
            # What lives now lives until the exit: no collection walks it again during the stop
            # (a full one, over every process's records, took 40-55 ms of a stop of 10,000).
            gc.freeze()
            await self.stop_all()
            # What no watcher could claim (daemons that made a session of their own): SIGTERM,
            # with the longest grace a `stop_children` watcher gives its descendants (else 1 s).
            grace = max(
                (w.config.graceful_timeout for w in self.watchers.values()
                 if w.config.stop_children),
                default=1.0,
            )
            await self.orphans.drain(grace, self.launcher.reap_strays, self._child_exited)
            # Hooks already due (after_stop...) finish, each within its deadline.
            longest = max((w.config.hook_timeout for w in self.watchers.values()), default=0.0)
            await self.hooks.runner.drain(longest)
        finally:
            self.notifier.stop_watchdog()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            self._leave_nothing_behind()
            self.sockets.close_all()
            loop.remove_signal_handler(signal.SIGCHLD)
            await self.output.close()
        log.info("stopped")
        return self._exit_status

    async def _run_until_stop(self) -> None:
        assert self._loop is not None
        if self._handover is not None:
            self._resume(self._handover)
            self._handover = None
            started = True
        elif not self._open_sockets():
            return
        else:
            self._find_left_workers()
            started = await self._start_unless_stopped()
            self.launcher.adoptable.stop_unclaimed()
        if not started:
            return
        log.info("circus-sd running %d watcher(s), pid %d", len(self.watchers), os.getpid())
        self.notifier.ready(self.status_line())
        self.notifier.start_watchdog(self._loop)
        # Now, off the start's path, but before any upgrade: a re-execution must save the
        # state with this program's format, not with that of a newer one installed since.
        from circus_sd import handover, reexec  # noqa: F401
        while True:
            request = await self._requests.get()
            if request is Request.STOP:
                return
            if request is Request.RELOAD:
                _inject_fault("reload")
                await self.reload_config()
            elif request is Request.REEXEC:
                await self._switch("asked by circusctl reexec")

    async def _start_unless_stopped(self) -> bool:
        """`start_all`, given up as soon as a stop is asked for: a start of thousands of
        processes takes a while, and SIGTERM must not wait for its end. False if stopped."""
        starting = asyncio.ensure_future(self.start_all())
        stop = asyncio.ensure_future(self._stop_asked.wait())
        try:
            await asyncio.wait({starting, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
        if starting.done() and not starting.cancelled():
            starting.result()  # what start_all raised, if anything
        return not self._stopping

    def _find_left_workers(self) -> None:
        """Workers a previous arbiter on this file left running, having died without handing
        its state over: each watcher's start takes them instead of spawning (adoption.py)."""
        from circus_sd import adoption

        found = adoption.workers(adoption.observe(), self.launcher.identity)
        if found:
            log.warning(
                "%d process(es) left running by a previous arbiter on %s: taking them over",
                len(found), self.config.path,
            )
            self.launcher.adoptable = adoption.Adoptable(found)

    def _open_sockets(self) -> bool:
        """Bind or adopt every [socket:NAME] before any watcher starts; False if one fails."""
        try:
            self.sockets.open_all(self.config.sockets)
        except SocketError as exc:
            log.error("cannot start: %s", exc)
            self._exit_status = 1
            return False
        return True

    def request(self, what: Request) -> None:
        """Queue work for the loop (what signal handlers call)."""
        if self._switching:
            # Re-executing: the next program does it (a stop, a reload), once it runs.
            if what in (Request.STOP, Request.RELOAD) and what not in self._after_switch:
                self._after_switch.append(what)
            return
        if what is Request.STOP:
            if self._stopping:
                return
            self._stopping = True
            self._stop_asked.set()
            # Watchers stop in priority order, maybe slowly: none starts more meanwhile.
            for watcher in self.watchers.values():
                watcher.spawn_no_more()
        self._requests.put_nowait(what)

    async def start_all(self) -> None:
        """Autostart watchers one after another, each once the previous one is started (ready,
        for those that say so). The last one is waited for until its processes exist, or, with
        `ready_wait`, until they are ready: then READY=1 goes to systemd."""
        delay = self.config.arbiter.warmup_delay
        order = start_order([w.config for w in self.watchers.values()])
        autostart = [self.watchers[c.name] for c in order if c.autostart]
        for index, watcher in enumerate(autostart):
            if index and delay:
                await asyncio.sleep(delay)
            last = index == len(autostart) - 1
            await self.start_watcher(watcher.name, ready=self.config.arbiter.ready_wait or not last)

    async def stop_all(self) -> None:
        """Stop watchers in reverse priority order; those of equal priority together."""
        configs = by_priority(w.config for w in self.watchers.values())
        for _priority, group in itertools.groupby(reversed(configs), key=lambda c: c.priority):
            members = list(group)
            # Graceful stops (and stop hooks) may outlast the unit's TimeoutStopSec: ask for
            # what they may take.
            self.notifier.extend_timeout(max(_stop_time(c) for c in members) + 5)
            await asyncio.gather(*(self.stop_watcher(c.name) for c in members))

    def _leave_nothing_behind(self) -> None:
        """Last: SIGKILL whatever is still our child, end the spawner, reap all."""
        # Ended first (SIGKILL if it does not exit at once: stopped, hung): nothing it could
        # still clone escapes the kills below.
        self.spawner.stop()
        self.orphans.kill_all(lambda pid: pid in self.launcher.table)
        self.launcher.close()
        if self.cgroups is not None:
            self.cgroups.close()
            for name in self.watchers:
                self.cgroups.remove(name)

    # -- watchers --------------------------------------------------------------------------------

    def _add_watcher(self, config: WatcherConfig) -> Watcher:
        watcher = Watcher(config, rng=self._rng)
        self.watchers[config.name] = watcher
        self._configure_cgroup(config)
        return watcher

    def _configure_cgroup(self, config: WatcherConfig) -> None:
        if self.cgroups is None:
            return
        try:
            errors = self.cgroups.configure(config)
        except OSError as exc:
            errors = [str(exc)]
        for error in errors:
            log.warning("%s: cgroup: %s", config.name, error)

    def lock(self, name: str) -> asyncio.Lock:
        """Serializes multi-step work on one watcher; different watchers run concurrently."""
        return self._locks.setdefault(name, asyncio.Lock())

    async def start_watcher(self, name: str, ready: bool = True) -> None:
        """Start a watcher; return once its processes run (and are `ready`, if they say so)."""
        watcher = self.watchers[name]
        await self._wait_for_dependencies(watcher)
        self._feed(name, watcher.start(self._clock()))
        # Settled, and not on its way down (a stop in progress, or a start a hook refused).
        await self.wait_for(
            lambda: watcher.start_settled_for(readiness=ready)
            and watcher.state is not WatcherState.STOPPING,
            name,
        )

    async def _wait_for_dependencies(self, watcher: Watcher) -> None:
        """`after`: wait until those watchers are active (ready); ordering, not a requirement."""
        deps = [self.watchers[n] for n in watcher.config.after if n in self.watchers]
        if not deps:
            return
        await self.wait_for(
            lambda: all(d.state is WatcherState.ACTIVE or d.state in HALTED_STATES for d in deps)
        )
        for dep in deps:
            if dep.state is not WatcherState.ACTIVE:
                log.warning(
                    "%s: starting although %s, which it comes after, is %s",
                    watcher.name,
                    dep.name,
                    dep.state.value,
                )

    async def stop_watcher(self, name: str) -> None:
        watcher = self.watchers[name]
        self._feed(name, watcher.stop(self._clock()))
        await self.wait_for(lambda: watcher.state in HALTED_STATES, name)
        await self._stop_leftovers(watcher)

    async def _stop_leftovers(self, watcher: Watcher) -> None:
        # At exit, beyond what stop_all asked of systemd for the watcher's own processes.
        extend = self.notifier.extend_timeout if self._stopping else None
        await self.orphans.stop(watcher.config, extend)

    async def restart_watcher(self, name: str) -> None:
        watcher = self.watchers[name]
        self._feed(name, watcher.restart(self._clock()))
        await self.wait_for(lambda: watcher.state not in (WatcherState.STOPPING,), name)
        await self._stop_leftovers(watcher)
        await self.wait_for(lambda: watcher.start_settled, name)

    async def reload_watcher(
        self, name: str, graceful: bool = True, sequential: bool = False
    ) -> None:
        """New processes for old: with `send_hup`, SIGHUP instead; not graceful = restart; a
        halted watcher is started."""
        watcher = self.watchers[name]
        if self._stopping:
            return
        if watcher.state in HALTED_STATES:
            # As Circus 0.19 (Watcher._reload): a stopped watcher, paused or failed ones
            # included, is started; a graceful reload then reports `reload` too.
            await self.start_watcher(name)
            if graceful:
                self.publish(name, "reload", {})
            return
        if watcher.state not in RUNNING_STATES:
            return  # stopping: the stop asked for goes on
        if watcher.config.send_hup:
            for pid in watcher.pids:
                self._signal(pid, signal.SIGHUP)
            self.publish(name, "reload", {})
            return
        if not graceful:
            await self.restart_watcher(name)
            self.publish(name, "reload", {})
            return
        batches = [{wid} for wid in sorted(watcher.wids)] if sequential else [None]
        for wids in batches:
            # Only this batch's processes: the others are not replaced now (sequential).
            old = watcher.pids_of_wids(wids)
            self._feed(name, watcher.replace_processes(self._clock(), wids))
            await self.wait_for(functools.partial(watcher.replaced, old), name)
            if sequential and watcher.config.warmup_delay:
                await asyncio.sleep(watcher.config.warmup_delay)
        self.publish(name, "reload", {})

    def check_process_bound(self, config: WatcherConfig) -> None:
        """Raise ProcessBoundError (process_bound.py) if running `config` (a new watcher, or in
        place of the current config of one) would take all watchers past max_processes. Fewer
        processes than now are always allowed."""
        current = self.watchers.get(config.name)
        if current is not None and config.target_processes <= current.config.target_processes:
            return
        others = sum(
            w.config.target_processes for n, w in self.watchers.items() if n != config.name
        )
        self.process_bound.check(config.name, config.target_processes, others)

    async def resize(self, name: str, numprocesses: int) -> None:
        watcher = self.watchers[name]
        config = dataclasses.replace(watcher.config, numprocesses=max(0, numprocesses))
        self.check_process_bound(config)
        self._feed(name, watcher.update_config(config, self._clock()))
        await self.wait_for(watcher.resize_settled, name)

    async def change_watcher(self, config: WatcherConfig) -> None:
        """`set`: live options at once, others by restarting the watcher with them."""
        self.check_process_bound(config)
        await self._apply_changed(self.watchers[config.name], config)

    async def add_watcher(self, config: WatcherConfig, start: bool) -> None:
        self.check_process_bound(config)
        self._add_watcher(config)
        self.config = dataclasses.replace(self.config, watchers=(*self.config.watchers, config))
        self.publish(config.name, "add", {})
        if start:
            await self.start_watcher(config.name)

    async def remove_watcher(self, name: str, stop: bool = True) -> None:
        if stop:
            await self.stop_watcher(name)
        watcher = self.watchers.pop(name)
        if self.cgroups is not None and stop:
            self.cgroups.remove(name)
        self.config = dataclasses.replace(
            self.config, watchers=tuple(w for w in self.config.watchers if w.name != name)
        )
        if not stop:
            # Left running as Circus's --nostop does: no longer ours to supervise.
            for pid in watcher.pids:
                self.launcher.forget(pid)
        self.orphans.forget_watcher(name)
        self.publish(name, "remove", {})

    async def kill_processes(
        self, name: str, pid: int | None, signum: int | None, graceful_timeout: float | None
    ) -> None:
        watcher = self.watchers[name]
        targets = set(watcher.pids) if pid is None else {pid}
        self._feed(name, watcher.kill(self._clock(), pid, signum, graceful_timeout))
        await self.wait_for(lambda: not targets & set(watcher.pids), name)

    def signal_processes(
        self, name: str, signum: int, pid: int | None = None, tree: bool = False
    ) -> list[int]:
        """Send a signal to a watcher's processes (or one); the pids signalled."""
        pids = [p for p in self.watchers[name].pids if pid in (None, p)]
        for target in pids:
            self._signal(target, signum, tree)
        return pids

    def signal_descendant(self, name: str, pid: int | None, child: int, signum: int) -> bool:
        """Signal `child`, a descendant of one of the watcher's processes (of `pid` if given),
        through the watcher's signal hooks; False if it is not one."""
        for parent in self.watchers[name].pids:
            if pid not in (None, parent):
                continue
            import psutil  # not at start: 11 ms and 0.8 MB of the arbiter, for a rare command

            try:
                descendants = {c.pid for c in psutil.Process(parent).children(recursive=True)}
            except psutil.Error:
                continue
            if child in descendants:

                def deliver() -> None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signum)

                self.hooks.around_signal(self.watchers[name], child, signum, deliver)
                return True
        return False

    def _signal(self, pid: int, signum: int, tree: bool = False) -> None:
        """Send a signal to a process, through its watcher's signal hooks if it has any."""
        name = self.launcher.table.owner(pid)
        watcher = self.watchers.get(name) if name is not None else None
        deliver = functools.partial(self.launcher.deliver, pid, signum, tree)
        if watcher is None:
            deliver()
        else:
            self.hooks.around_signal(watcher, pid, signum, deliver)

    def freeze(self, name: str, frozen: bool) -> None:
        if self.cgroups is None:
            raise OSError("freezing needs per-watcher cgroups, which are off here")
        self.cgroups.freeze(name, frozen)
        self.publish(name, "freeze" if frozen else "thaw", {})

    # -- what the control commands read ----------------------------------------------------------

    def process_info(self, pid: int, extended: bool = False) -> Any:
        name = self.launcher.table.owner(pid)
        wid = None
        if name is not None and name in self.watchers:
            record = self.watchers[name].process_by_pid(pid)
            wid = record.wid if record is not None else None
        return self._stats.info(pid, extended, wid)

    def process_start_times(self, name: str) -> list[float]:
        """Wall-clock start time of each process of a watcher."""
        table = self.launcher.table
        entries = [table.get(pid) for pid in self.watchers[name].pids]
        return [entry.started_wall for entry in entries if entry is not None]

    def dropped_output(self, name: str) -> tuple[int, int]:
        """Lines and bytes of a watcher's output dropped since the arbiter started."""
        lines, size = self.output.drops.totals.get(name, (0, 0))
        return lines, size

    def cgroup_stats(self, name: str) -> dict[str, Any] | None:
        """The kernel's figures for a watcher's cgroup; None when cgroups are off."""
        if self.cgroups is None:
            return None
        return self.cgroups.cgroups.stats(name)

    async def extended_stats(self, name: str, pid: int, stats: Any) -> Any:
        """Circus's `extended_stats` hook: it may add to a process's `stats --extended`."""
        watcher = self.watchers.get(name)
        if watcher is None:
            return stats
        return await self.hooks.extended_stats(watcher, pid, stats)

    def global_options(self) -> dict[str, Any]:
        """Circus's five keys with Circus's types, then circus-sd's own."""
        return {
            "endpoint": self.endpoints.get("endpoint"),
            "pubsub_endpoint": self.endpoints.get("pubsub_endpoint"),
            # No stats publisher and no discovery socket here: "" is how Circus says "none"
            # (`multicast_endpoint =`), and a client reading a string still gets one.
            "stats_endpoint": "",
            "multicast_endpoint": "",
            # No polling tick; Circus's default, for clients that pace themselves on it.
            "check_delay": 5.0,
            "output_endpoint": self.endpoints.get("output_endpoint"),
            "pidfile": self.config.arbiter.pidfile,
            "loglevel": self.config.arbiter.loglevel,
            # Re-executions so far (`reexec`), and the code now running.
            "generation": self.generation,
            "version": __version__,
        }

    def status_line(self) -> str:
        """One line for `systemctl status`: watchers, processes, trouble, last error."""
        return status_line(self.watchers, self.last_error)

    def watchers_stopped(self) -> asyncio.Future[None]:
        """Done once a stop of the whole arbiter has stopped every watcher."""
        return self.wait_for(
            lambda: self._stopping and all(w.state in HALTED_STATES for w in self.watchers.values())
        )

    def wait_for(
        self, predicate: Callable[[], bool], watcher: str | None = None
    ) -> asyncio.Future[None]:
        """A future done once `predicate` holds; checked after every batch of actions of
        `watcher` (of any watcher if None: 100 stops of 100 processes checked 100 predicates
        at each of 10,000 exits)."""
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        if predicate():
            future.set_result(None)
        else:
            self._waiters.setdefault(watcher, []).append((predicate, future))
        return future

    def _check_waiters(self, name: str) -> None:
        for key in (name, None):
            waiting = self._waiters.get(key)
            if not waiting:
                continue
            still = []
            for predicate, future in waiting:
                if future.done():
                    continue
                if predicate():
                    future.set_result(None)
                else:
                    still.append((predicate, future))
            if still:
                self._waiters[key] = still
            else:
                del self._waiters[key]

    # -- configuration reload --------------------------------------------------------------------

    def read_config(self) -> tuple[Config, list[ConfigWarning]]:
        """Read and check the config file again, applying nothing; ConfigError if refused
        (logged: the running configuration is kept)."""
        try:
            return self._loader(self.config.path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            raise

    async def reload_config(
        self, read: tuple[Config, list[ConfigWarning]] | None = None
    ) -> str | None:
        """Re-read the config file (unless `read` already holds it, from read_config) and
        apply only what changed; the error if it is refused."""
        self.notifier.reloading()
        try:
            return await self._reload_config(read)
        finally:
            self.notifier.ready(self.status_line())

    async def _reload_config(self, read: tuple[Config, list[ConfigWarning]] | None) -> str | None:
        try:
            new, warnings = read if read is not None else self.read_config()
        except ConfigError as exc:
            return str(exc)
        for warning in warnings:
            log.warning("%s", warning)
        # New sockets first: if one cannot be bound, nothing has changed yet.
        try:
            self.sockets.open_added(new.sockets)
        except SocketError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return str(exc)
        self.hooks.runner.forget_imports()
        if new.arbiter != self.config.arbiter:
            log.warning("the [circus] section changed: restart circus-sd to apply it")
        wanted_up = {n for n, w in self.watchers.items() if w.want is Want.UP}
        from circus_sd import reload_plan  # not at start: 6 ms of it, for a reload

        steps = reload_plan.plan(
            self.config, new, self.sockets.changes(new.sockets), wanted_up, self.watchers.keys()
        )
        self.config = new
        await self._execute_reload(steps, {s.name: s for s in new.sockets})
        log.info("configuration reloaded from %s", new.path)
        return None

    async def _execute_reload(
        self, steps: list[reload_plan.Step], sockets: dict[str, Any]
    ) -> None:
        from circus_sd import reload_plan

        added: list[tuple[Watcher, bool]] = []
        for step in steps:
            match step:
                case reload_plan.RemoveWatcher(name):
                    log.info("%s: removed from the configuration", name)
                    await self.remove_watcher(name)
                case reload_plan.StopForSocket(name):
                    log.info("%s: restarting it, a socket it uses changed", name)
                    async with self.lock(name):
                        await self.stop_watcher(name)
                case reload_plan.RebindSocket(name):
                    try:
                        self.sockets.rebind(sockets[name])
                        log.info("[socket:%s] bound again with its new options", name)
                    except SocketError as exc:
                        log.error("%s", exc)
                        self.last_error = str(exc)
                case reload_plan.CloseSocket(name):
                    self.sockets.close(name)
                case reload_plan.ChangeWatcher(config):
                    async with self.lock(config.name):
                        await self._apply_changed(self.watchers[config.name], config)
                case reload_plan.StartAfterSocket(name):
                    async with self.lock(name):
                        await self.start_watcher(name)
                case reload_plan.AddWatcher(config, start):
                    # All added first, then started in order: `after` finds its peers.
                    added.append((self._add_watcher(config), start))
        for watcher, start in sorted(added, key=lambda a: -a[0].config.priority):
            log.info("%s: added", watcher.name)
            self.publish(watcher.name, "add", {})
            if start:
                await self.start_watcher(watcher.name)

    async def _apply_changed(self, watcher: Watcher, config: WatcherConfig) -> None:
        """Apply a changed config; the caller holds the watcher's lock."""
        changed = changed_options(watcher.config, config)
        self._configure_cgroup(config)
        if not needs_restart(watcher.config, config):
            log.info("%s: applying %s without a restart", watcher.name, ", ".join(changed))
            self._feed(watcher.name, watcher.update_config(config, self._clock()))
        else:
            log.info("%s: %s changed, restarting it", watcher.name, ", ".join(changed))
            running = watcher.want is Want.UP
            await self.stop_watcher(watcher.name)
            watcher.replace_config(config)
            if running:
                await self.start_watcher(watcher.name)
        self.publish(watcher.name, "updated", {})

    # -- re-execution (handover.py, reexec.py) ---------------------------------------------------

    async def check_reexec(self, cut_commands: bool = False) -> str | None:
        """Whether a re-execution may go ahead: None, or why not. The installed program is run
        on the state as it is now, as a separate process, and must be able to read it. Not
        while a command is at work (a reload, a restart: the execve would cut it halfway),
        unless `cut_commands` (after a failure, the arbiter goes either way)."""
        if self._stopping:
            return "the arbiter is stopping"
        if self._switching:
            return "a re-execution is already in progress"
        busy = self.control.commands_in_flight() if self.control is not None else []
        if busy and not cut_commands:
            return f"{', '.join(busy)} in progress: try again once it is done"
        options = self.config.arbiter
        for endpoint in (options.endpoint, options.pubsub_endpoint, options.output_endpoint):
            if endpoint and endpoint.startswith("systemd:"):
                # ZMQ owns the descriptor systemd passed for it: it cannot be handed on.
                return f"{endpoint}: an endpoint from systemd's sockets is not carried yet"
        from circus_sd import handover as handovers
        from circus_sd import reexec

        try:
            data = handovers.dump(self._handover_now(preview=True))
        except Exception as exc:  # an object of a hook's or a stream's that pickle refuses
            return f"cannot save the state: {type(exc).__name__}: {exc}"
        assert self._loop is not None
        try:
            check = reexec.Check(data)
        except OSError as exc:
            return f"cannot run the installed circus-sd ({reexec.command()[0]}): {exc}"
        # Ours to reap (the check's wait), not a stray's.
        self.launcher.helpers.add(check.process.pid)
        try:
            with handled_signals_blocked():  # its thread never takes ours (signal_mask.py)
                waiting = self._loop.run_in_executor(None, check.outcome)
            return await waiting
        finally:
            self.launcher.helpers.discard(check.process.pid)

    async def _switch(self, reason: str) -> None:
        """Hand everything to the installed program of circus-sd, in this process (execve).

        Until the freeze, giving up is clean (control opened again, nothing lost). After it,
        returns only if the execve fails (logged); the arbiter then stops as after a crash,
        its processes with it."""
        from circus_sd import handover as handovers
        from circus_sd import reexec

        assert self._loop is not None
        if self._stopping:
            return  # asked to stop since: that comes first
        self._switching = True
        self.notifier.reloading()
        log.info("re-executing circus-sd (%s); every process stays", reason,
                 extra=about(MessageId.REEXEC))
        # No command from now on (the reply that asked for it has gone out); those already at
        # work end first, and hooks and spawns in flight are answered. The loop runs as usual
        # meanwhile, the systemd watchdog's pings too.
        control = self.control
        locks = await control.close(keep_locks=True) if control is not None else {}
        busy = await control.wait_for_commands(COMMANDS_TIMEOUT) if control is not None else []
        if busy:
            self._give_up_switch(locks, f"{', '.join(busy)} still at work")
            return
        if not await self._settle():
            self._give_up_switch(locks, "spawns or hooks still in flight")
            return
        if Request.STOP in self._after_switch:
            self._give_up_switch(locks, "asked to stop meanwhile")
            return
        # Frozen from here: what happens to processes waits in their pidfds and pipes.
        timers = self._timers.pending()
        self._timers.clear()
        self.launcher.hold()
        if self.cgroups is not None:
            self.cgroups.hold()
        pipes = await self.output.carry()
        self.spawner.stop()
        # Signals now stay pending, across execve, for the next program's handlers (the default
        # action of SIGTERM would end the arbiter meanwhile). Those taken already become
        # requests in the loop's next turns; no other thread takes one (signal_mask.py).
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        for _turn in range(3):
            await asyncio.sleep(0)
        while not self._requests.empty():  # asked before or during the switch, not done yet
            queued = self._requests.get_nowait()
            if queued in (Request.STOP, Request.RELOAD) and queued not in self._after_switch:
                self._after_switch.append(queued)
        state = self._handover_now(preview=False, timers=timers, pipes=pipes, locks=locks)
        state.reason = reason
        state.requests = [r.value for r in self._after_switch]
        data = handovers.dump(state)
        from circus_sd.logging_setup import stop_logging

        stop_logging()
        self.notifier.stop_watchdog()
        self.notifier.watchdog_ping()  # the next program pings again once it runs
        try:
            reexec.execute(data, state.fds(), self.notifier.own_variables)
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            log.critical("cannot re-execute %s: %s", reexec.command(), exc)
            raise

    def _give_up_switch(self, locks: dict[str, int], why: str) -> None:
        """Before the freeze: go on as this program, control opened again on its endpoints."""
        log.error("re-execution given up: %s; this arbiter goes on", why,
                  extra=about(MessageId.REEXEC))
        self._switching = False
        if self.control is not None:
            try:
                self.control.open(locks)
            except Exception:  # the processes are still supervised; only circusctl is lost
                log.critical("the control endpoints could not be opened again", exc_info=True)
        self.notifier.ready(self.status_line())
        asked, self._after_switch = self._after_switch, []
        for request in asked:  # a stop or reload that came meanwhile
            self.request(request)

    async def _settle(self) -> bool:
        """Let hooks in flight answer (each within its deadline) and spawns be answered, until
        both are done at once; False if they are not within the bound."""
        longest = max((w.config.hook_timeout for w in self.watchers.values()), default=0.0)
        deadline = self._clock() + longest + SETTLE_TIMEOUT
        while self._clock() < deadline:
            await self.hooks.runner.drain(max(0.0, deadline - self._clock()))
            if self.launcher.settled() and not self.hooks.runner.busy:
                return True
            await asyncio.sleep(0.01)
        return False

    def _handover_now(
        self,
        preview: bool,
        timers: list[tuple[str, Hashable, float]] | None = None,
        pipes: list[Any] | None = None,
        locks: dict[str, int] | None = None,
    ) -> Handover:
        """The state as it is. A preview (for the check) leaves every descriptor as it is."""
        from circus_sd.handover import HANDOVER_VERSION, Handover

        if preview:
            timers = self._timers.pending()
            sockets: dict[str, Any] = {}
            unused: dict[str, int] = {}
        else:
            sockets, unused = self.sockets.carry()
        leaves: dict[int, str] = {}
        draining: list[int] = []
        if self.cgroups is not None:
            leaves, draining = self.cgroups.carry()
        notify_directory, _count = self.launcher.notify_directory()
        return Handover(
            version=HANDOVER_VERSION,
            code_version=__version__,
            config=self.config,
            watchers=self.watchers,
            timers=timers or [],
            processes=self.launcher.carry(inherit=not preview),
            pipes=pipes or [],
            sockets=sockets,
            unused_sockets=unused,
            endpoint_locks=locks or {},
            pidfile=None if preview or self.pidfile is None else self.pidfile.carry(),
            notify_directory=notify_directory,
            notify_count=_count,
            systemd_env=self.notifier.own_variables,
            defaults=self.launcher.defaults,
            started_at=self.started_at,
            sessions=self._leftovers.sessions if self._leftovers is not None else {},
            leaves=leaves,
            draining=draining,
            dropped={n: (t[0], t[1]) for n, t in self.output.drops.totals.items()},
            crash_reexecs=self._crash_reexecs,
            generation=self.generation + 1,
            reason="",
        )

    def _resume(self, state: Handover) -> None:
        """The first turn of a re-executed arbiter: take back what the previous program held."""
        assert self._loop is not None
        self.sockets.adopt_carried(self.config.sockets, state.sockets, state.unused_sockets)
        self.launcher.resume(state.processes, (state.notify_directory, state.notify_count))
        for pipe in state.pipes:
            watcher = self.watchers.get(pipe.watcher)
            if watcher is None:
                os.close(pipe.fd)
                continue
            self.output.adopt(watcher.config, pipe)
        if self.cgroups is not None:
            self.cgroups.resume(state.leaves, state.draining)
        if self._leftovers is not None:
            self._leftovers.adopt_sessions(state.sessions)
        for name, (lines, size) in state.dropped.items():
            self.output.drops.totals[name] = [lines, size]
        for name, key, deadline in state.timers:
            self._timers.start_at(name, key, deadline)
        # Workers' orphans (without cgroups) are found again in the sessions carried.
        self.orphans.scan_soon()
        log.info(
            "re-executed (%s): circus-sd %s took over %d process(es) of %d watcher(s)",
            state.reason, __version__, len(state.processes), len(self.watchers),
            extra=about(MessageId.REEXEC),
        )
        for asked in state.requests:  # a stop or reload that came during the switch
            self.request(Request(asked))

    async def _reexec_after_crash(self, exc: BaseException) -> None:
        """Re-execute with the state instead of exiting (processes kept), a few times a minute
        at most; returns if not allowed or refused (the caller then exits as before)."""
        from circus_sd import reexec

        now = self._clock()
        if self._stopping or self._switching:
            return
        if not reexec.crash_budget_left(self._crash_reexecs, now):
            log.critical("the arbiter failed %d times within %g s: exiting",
                         reexec.CRASH_REEXECS, reexec.CRASH_WINDOW)
            return
        log.critical("the arbiter failed; re-executing it with its state", exc_info=exc)
        refusal = await self.check_reexec(cut_commands=True)
        if refusal is not None:
            log.critical("cannot re-execute: %s", refusal)
            return
        self._crash_reexecs = [t for t in self._crash_reexecs if now - t < reexec.CRASH_WINDOW]
        self._crash_reexecs.append(now)
        await self._switch("after a failure of the arbiter")

    # -- executing actions -----------------------------------------------------------------------

    def _feed(self, name: str, actions: list[Action]) -> None:
        executors = self._executors
        for action in actions:
            executors[type(action)](name, action)
        self._check_waiters(name)
        if self.notifier.enabled and not self._status_scheduled and self._loop is not None:
            self._status_scheduled = True
            self._loop.call_soon(self._update_status)

    def _execute_spawn(self, name: str, action: Spawn) -> None:
        self.launcher.spawn(self.watchers[name].config, action)

    def _execute_signal(self, name: str, action: Signal) -> None:
        self._signal(action.pid, action.signum, action.tree)

    def _execute_start_timer(self, name: str, action: StartTimer) -> None:
        self._timers.start(name, action.key, action.delay)

    def _execute_cancel_timer(self, name: str, action: CancelTimer) -> None:
        self._timers.cancel(name, action.key)

    def _execute_publish(self, name: str, action: Publish) -> None:
        self.publish(name, action.event, action.payload)

    def _execute_log(self, name: str, action: Log) -> None:
        if action.level >= logging.ERROR:
            self.last_error = action.message
        level = self._shared_warnings.level(action.level, action.shared, self._clock())
        if log.isEnabledFor(level):
            subject = about(action.kind, name, action.wid, action.pid)
            log.log(level, "%s", action.message, extra=subject)

    def _update_status(self) -> None:
        self._status_scheduled = False
        self.notifier.status(self.status_line())

    def publish(self, watcher: str, event: str, payload: dict[str, Any]) -> None:
        self.emit(f"watcher.{topic_name(watcher)}.{event}", payload)

    def emit(self, topic: str, payload: dict[str, Any]) -> None:
        """Publish an event on any topic (the `publish` command: `plugin.<name>.<event>`)."""
        body = {**payload, "time": time.time()}
        for listener in self.listeners:
            listener(topic, body)

    def _on_timer(self, name: str, key: Hashable) -> None:
        watcher = self.watchers.get(name)
        if watcher is not None:
            self._feed(name, watcher.timer(key, self._clock()))

    def _call_hook(self, name: str, action: CallHook) -> None:
        """A hook the watcher asked for; a gate's outcome goes back to the watcher as
        `hook_done` (unless the watcher was replaced meanwhile)."""
        watcher = self.watchers.get(name)
        if watcher is None:
            return

        def answer(approved: bool) -> None:
            if self.watchers.get(name) is watcher:
                self._feed(name, watcher.hook_done(action.token, approved, self._clock()))

        self.hooks.gate(watcher, action, answer)

    def _arbiter_view(self) -> ArbiterView:
        return ArbiterView(sorted(self.watchers), self.endpoints.get("endpoint"))

    def _search_path(self, watcher: Watcher) -> list[str]:
        return hook_search_path(os.path.dirname(self.config.path), watcher.config)

    # -- what happens to processes (reported by the launcher and the outside) --------------------

    def _on_sigchld(self) -> None:
        self._child_exited.set()
        self.launcher.reap_strays_soon()

    def _on_leaf_empty(self, pid: int) -> None:
        self.launcher.leaf_empty(pid)

    def _on_oom(self, name: str, kills: int) -> None:
        log.warning(
            "%s: the kernel's OOM killer killed %d process(es) at memory_max", name, kills,
            extra=about(MessageId.OOM_KILL, name),
        )
        self.publish(name, "oom", {"oom_kill": kills})

    def _match_ready_line(self, origin: Origin, lines: list[Buffer]) -> None:
        """`ready_log_line`: a process not ready yet whose output matches is ready now."""
        watcher = self.watchers.get(origin.watcher)
        if watcher is None or watcher.config.ready_log_line is None:
            return
        pid = origin.pid
        record = watcher.process_by_pid(pid)
        cloned = self.launcher.is_cloned(pid)
        # Searched until ready, stopped (a failed start) or gone; a pid not exec'd yet has no
        # record, and a match is its first sign of life.
        if record is None and not cloned:
            return
        if record is not None and (record.ready or record.state is not ProcessState.RUNNING):
            return
        if not self._ready_search.search(origin, watcher.config.ready_log_line, lines):
            return
        self._ready_search.forget(pid)
        # Only the exec'd program writes its output: its exec succeeded.
        self.launcher.confirm_exec(pid)
        self._feed(watcher.name, watcher.output_matched(pid, self._clock()))


    # -- the launcher's reports (launcher.LaunchReports), passed on to the watchers -------------

    def on_spawned(self, name: str, batch: list[tuple[int, int]]) -> None:
        watcher = self.watchers.get(name)
        if watcher is not None:
            self._feed(name, watcher.spawned_all(batch, self._clock()))

    def on_spawn_failed(
        self, name: str, spawn_id: int, reason: str, code: int | None, spawner_lost: bool
    ) -> None:
        watcher = self.watchers.get(name)
        if watcher is not None:
            actions = watcher.spawn_failed(spawn_id, reason, self._clock(), code, spawner_lost)
            self._feed(name, actions)

    def on_exited(self, name: str, pid: int, exit_code: int, exec_error: str | None) -> None:
        watcher = self.watchers.get(name)
        if watcher is not None:
            self.hooks.around_reap(watcher, pid, exit_code)
            self._feed(name, watcher.exited(pid, exit_code, self._clock(), exec_error))

    def on_notified(self, name: str, pid: int, message: dict[str, str]) -> None:
        watcher = self.watchers.get(name)
        if watcher is not None:
            self._feed(name, watcher.notified(pid, message, self._clock()))

    def on_orphans_reaped(self) -> None:
        self.orphans.scan_soon()

    def is_stopping(self, name: str, pid: int) -> bool:
        watcher = self.watchers.get(name)
        return watcher is not None and watcher.is_stopping(pid)

    def is_watched(self, name: str) -> bool:
        return name in self.watchers

def _inject_fault(point: str) -> None:
    """For the tests of what follows a failure of the arbiter (CIRCUS_SD_INJECT_FAULT=reload:
    a SIGHUP raises in the loop, as a bug would)."""
    if os.environ.get("CIRCUS_SD_INJECT_FAULT") == point:
        raise RuntimeError(f"injected fault at {point} (CIRCUS_SD_INJECT_FAULT)")


def _stop_time(config: WatcherConfig) -> float:
    """How long stopping a watcher may take: graceful timeout, and its stop hooks'."""
    hooks = sum(name in config.hooks for name in ("before_stop", "after_stop"))
    return config.graceful_timeout + hooks * config.hook_timeout

