"""The arbiter: one asyncio loop that executes the watchers' decisions and feeds them events."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import enum
import errno
import functools
import itertools
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import psutil

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
from circus_sd.child_notify import NotifySocket, NotifySockets
from circus_sd.config.loader import ConfigError, ConfigWarning
from circus_sd.config.model import Config, WatcherConfig
from circus_sd.config.options import option_of
from circus_sd.control.watcher_options import option_values
from circus_sd.endpoints import runtime_dir
from circus_sd.fd_reserve import FdReserve
from circus_sd.hooks import (
    PROCESS_GONE,
    ArbiterView,
    HookOutcome,
    HookRunner,
    WatcherView,
    watcher_view,
)
from circus_sd.leftovers import Leftover, Leftovers, clones_of_a_lost_spawner
from circus_sd.output.lines import Buffer
from circus_sd.output.ready_line import ReadyLineSearch
from circus_sd.output.router import OutputRouter, ProcessOutput
from circus_sd.output.sink import Origin
from circus_sd.process import ProcessHandle, own_children, reap_strays
from circus_sd.process_bound import process_bound
from circus_sd.process_stats import ProcessStats
from circus_sd.sockets import ListeningSockets, SocketError
from circus_sd.spawn_client import Spawner
from circus_sd.spawn_plan import ChildDefaults, SpawnPlanError, build_request, socket_layout
from circus_sd.spawner import SpawnerLost, SpawnError
from circus_sd.start_order import start_order
from circus_sd.states import (
    HALTED_STATES,
    RUNNING_STATES,
    STOPPING_PROCESS_STATES,
    ProcessState,
    Want,
    WatcherState,
)
from circus_sd.systemd_notify import SystemdNotifier
from circus_sd.watcher import Watcher

log = logging.getLogger("circus_sd")

ConfigLoader = Callable[[str], tuple[Config, list[ConfigWarning]]]
EventListener = Callable[[str, dict[str, Any]], None]


class Request(enum.Enum):
    """What a signal handler may ask of the loop; handlers do nothing but enqueue these."""

    STOP = "stop"
    RELOAD = "reload"


def topic_name(watcher: str) -> str:
    """Circus's event topic spelling of a watcher name."""
    return watcher.lower().replace(" ", "_")


@dataclasses.dataclass
class PendingSpawn:
    """What a process being spawned holds until its pid is known; closed if the spawn fails."""

    notify: NotifySocket | None = None
    output: ProcessOutput | None = None

    def discard(self) -> None:
        if self.notify is not None:
            self.notify.close()
        if self.output is not None:
            self.output.discard()


def _quiet_signal_wakeup() -> None:
    """Keep asyncio's signal wakeup fd, without CPython's report of a write to it that failed.

    A thousand children exiting at once fill that socket with SIGCHLD bytes. Nothing is lost
    by it (exits come from pidfds, strays are reaped at the next SIGCHLD that gets through),
    but for each failed write CPython's C signal handler queues a report through a lock that
    the interrupted thread may hold: the arbiter deadlocked in its stop of 1,000 (and printed
    thousands of tracebacks before). The same fd is set again with the report off, at start-up
    before any watcher runs; the signals are held in this thread meanwhile (another thread
    taking one in those microseconds would find no wakeup fd)."""
    held = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        fd = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Arbiter:
    """Runs watchers: spawns through the spawner, reaps through pidfds, keeps their timers."""

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
    ) -> None:
        self.config = config
        self.spawner = spawner
        spawner.after_loss = self._kill_lost_clones
        # [socket:NAME] sections: bound (or adopted from systemd) at start, held until exit.
        self.sockets = sockets or ListeningSockets()
        # Per-watcher cgroups when a delegated cgroup v2 tree was found (None: process groups).
        self.cgroups = (
            CgroupSupervision(cgroups, self._on_leaf_empty, self._on_oom) if cgroups else None
        )
        # Without cgroups: orphans adopted from workers' sessions, stopped with their watcher.
        self._leftovers = None if self.cgroups else Leftovers()
        self._leftover_scan_due = False
        # Processes whose main pid was reaped while their leaf still held descendants.
        self._exit_pending: dict[int, tuple[str, int, str | None]] = {}
        # Spawned children that have not exec'd yet (pid -> spawn id).
        self._not_execed: dict[int, int] = {}
        # Children whose exec succeeded this loop turn, told to their watchers at its end.
        self._execed_batch: list[int] = []
        self.listeners: list[EventListener] = []
        self.hooks = HookRunner(self.publish)
        self._loader = loader
        self._defaults = defaults or ChildDefaults.capture()
        self._clock = clock
        self._rng = rng or random.Random()
        self.notifier = notifier or SystemdNotifier({})
        self.last_error = ""
        self._status_scheduled = False
        self.watchers: dict[str, Watcher] = {}
        for watcher_config in config.watchers:
            self._add_watcher(watcher_config)
        self._handles: dict[int, ProcessHandle] = {}
        self._owner: dict[int, str] = {}
        self._timers: dict[tuple[str, Hashable], asyncio.TimerHandle] = {}
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._requests: asyncio.Queue[Request] = asyncio.Queue()
        self._strays_pending = False
        # Spawn answers whose _on_spawned has not run yet: the spawner no longer counts them in
        # flight, but their children are not in _handles either (see _reap_strays).
        self._unclaimed_spawns = 0
        self._child_exited = asyncio.Event()
        self._stop_asked = asyncio.Event()
        self._exit_status = 0
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.started_at = time.time()
        # Filled by the control server: the endpoints it bound.
        self.endpoints: dict[str, str] = {}
        self._stats = ProcessStats()
        self._started_wall: dict[int, float] = {}
        self._notify_sockets = NotifySockets(runtime_dir())
        # What each process being spawned holds until its pid is known (its sd_notify socket,
        # its output pipes), by (watcher, spawn id).
        self._pending_spawns: dict[tuple[str, int], PendingSpawn] = {}
        # Child output (circus_sd/output): pipes and sinks; by spawn until the pid is known.
        self.output = OutputRouter(self.publish)
        self.output.taps.append(self._match_ready_line)
        self._ready_search = ReadyLineSearch()
        # Per-process sd_notify sockets, by pid.
        self._notify: dict[int, NotifySocket] = {}
        self._fd_reserve = FdReserve()
        # The most processes of all watchers together; computed once, at start.
        self.process_bound = process_bound(config.arbiter.max_processes)

    # -- life of the arbiter ---------------------------------------------------------------------

    async def run(self) -> int:
        """Start the watchers, serve signals until told to stop, stop everything. Exit status."""
        loop = self._loop = asyncio.get_running_loop()
        self.spawner.attach(loop)
        if self.cgroups is not None:
            self.cgroups.attach(loop)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(signum, self.request, Request.STOP)
        loop.add_signal_handler(signal.SIGHUP, self.request, Request.RELOAD)
        loop.add_signal_handler(signal.SIGCHLD, self._on_sigchld)
        _quiet_signal_wakeup()
        try:
            if not self._open_sockets():
                return self._exit_status
            if await self._start_unless_stopped():
                log.info(
                    "circus-sd running %d watcher(s), pid %d", len(self.watchers), os.getpid()
                )
                self.notifier.ready(self.status_line())
                self.notifier.start_watchdog(loop)
                while True:
                    request = await self._requests.get()
                    if request is Request.STOP:
                        break
                    await self.reload_config()
            log.info("stopping")
            self.notifier.stopping()
            await self.stop_all()
            # What no watcher could claim (daemons that made a session of their own).
            await self._drain_orphans()
            # Hooks already due (after_stop...) finish, each within its deadline.
            longest = max((w.config.hook_timeout for w in self.watchers.values()), default=0.0)
            await self.hooks.drain(longest)
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
        ordered = list(reversed(self._by_priority(self.watchers.values())))
        for _priority, group in itertools.groupby(ordered, key=lambda w: w.config.priority):
            members = list(group)
            # Graceful stops (and stop hooks) may outlast the unit's TimeoutStopSec: ask for
            # what they may take.
            self.notifier.extend_timeout(max(_stop_time(w.config) for w in members) + 5)
            await asyncio.gather(*(self.stop_watcher(w.name) for w in members))

    def _orphans(self) -> set[int]:
        """Our children that no watcher owns: descendants adopted (as subreaper) from exits."""
        spawners = self.spawner.pids
        return {p for p in own_children() if p not in spawners and p not in self._handles}

    async def _drain_orphans(self) -> None:
        """Orphans left by stopped processes get SIGTERM and a grace period, then SIGKILL.

        The grace is the longest `graceful_timeout` of a `stop_children` watcher (whose
        descendants already got its stop signal), else 1 s. Exits wake us through SIGCHLD.
        """
        assert self._loop is not None
        grace = max(
            (w.config.graceful_timeout for w in self.watchers.values() if w.config.stop_children),
            default=1.0,
        )
        deadline = self._loop.time() + grace
        signalled: set[int] = set()
        while True:
            self._child_exited.clear()
            self._reap_strays()
            orphans = self._orphans()
            remaining = deadline - self._loop.time()
            if not orphans or remaining <= 0:
                return
            for pid in orphans - signalled:
                log.info("stopping %s, orphaned by a stopped process", _describe_pid(pid))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            signalled |= orphans
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._child_exited.wait(), remaining)

    def _leave_nothing_behind(self) -> None:
        """Last: SIGKILL whatever is still our child, end the spawner, reap all."""
        # Ended first (SIGKILL if it does not exit at once: stopped, hung): nothing it could
        # still clone escapes the kills below.
        self.spawner.stop()
        if self._leftovers is not None:
            for leftover in self._leftovers.found():
                self._drop_leftover(leftover)
        # A killed orphan's own children are re-parented to us as it dies: go again until none.
        for _round in range(20):
            leftovers = own_children()
            if not leftovers:
                break
            for pid in leftovers:
                if pid not in self._handles:
                    log.info("killing %s, left after the stop", _describe_pid(pid))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in leftovers:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
        for pid in list(self._handles):
            self._forget(pid)
        self._notify_sockets.close()
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

    @staticmethod
    def _by_priority(watchers: Iterable[Watcher]) -> list[Watcher]:
        # Highest priority first, as in Circus; file order among equals (sort is stable).
        return sorted(watchers, key=lambda w: -w.config.priority)

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
            and watcher.state is not WatcherState.STOPPING
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
        await self.wait_for(lambda: watcher.state in HALTED_STATES)
        await self._stop_leftovers(name)

    async def restart_watcher(self, name: str) -> None:
        watcher = self.watchers[name]
        self._feed(name, watcher.restart(self._clock()))
        await self.wait_for(lambda: watcher.state not in (WatcherState.STOPPING,))
        await self._stop_leftovers(name)
        await self.wait_for(lambda: watcher.start_settled)

    async def reload_watcher(
        self, name: str, graceful: bool = True, sequential: bool = False
    ) -> None:
        """New processes for old: with `send_hup`, SIGHUP instead; not graceful = restart."""
        watcher = self.watchers[name]
        if watcher.state not in RUNNING_STATES:
            return
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
            old = {
                p.pid
                for p in watcher.processes.values()
                if p.pid is not None and (wids is None or p.wid in wids)
            }
            self._feed(name, watcher.replace_processes(self._clock(), wids))
            # The replacements are up when no process is spawning and the old ones are gone.
            await self.wait_for(
                lambda old=old: (
                    watcher.start_settled
                    and not any(  # type: ignore[misc]
                        p.state is ProcessState.SPAWNING for p in watcher.processes.values()
                    )
                    and not old & set(watcher.pids)
                )
            )
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
        await self.wait_for(
            lambda: (
                watcher.start_settled
                and not any(p.state is ProcessState.SPAWNING for p in watcher.processes.values())
            )
        )

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
                self._forget(pid)
        self._forget_leftovers(name)
        self.publish(name, "remove", {})

    async def kill_processes(
        self, name: str, pid: int | None, signum: int | None, graceful_timeout: float | None
    ) -> None:
        watcher = self.watchers[name]
        targets = set(watcher.pids) if pid is None else {pid}
        self._feed(name, watcher.kill(self._clock(), pid, signum, graceful_timeout))
        await self.wait_for(lambda: not targets & set(watcher.pids))

    def signal_processes(
        self, name: str, signum: int, pid: int | None = None, tree: bool = False
    ) -> list[int]:
        """Send a signal to a watcher's processes (or one); the pids signalled."""
        pids = [p for p in self.watchers[name].pids if pid in (None, p)]
        for target in pids:
            self._signal(target, signum, tree)
        return pids

    def _signal(self, pid: int, signum: int, tree: bool = False) -> None:
        """Send a signal to a process, through its watcher's signal hooks if it has any."""
        name = self._owner.get(pid)
        if name is None or name not in self.watchers:
            self._deliver(pid, signum, tree)
            return
        self._signal_through_hooks(name, pid, signum, lambda: self._deliver(pid, signum, tree))

    def _signal_descendant(self, name: str, pid: int, signum: int) -> None:
        def deliver() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

        self._signal_through_hooks(name, pid, signum, deliver)

    def _signal_through_hooks(
        self, name: str, pid: int, signum: int, deliver: Callable[[], None]
    ) -> None:
        """`deliver` the signal between the watcher's before_signal and after_signal hooks.

        before_signal returning False keeps the signal from being sent, as in Circus; SIGKILL is
        never held back, nor delayed, by a hook.
        """
        watcher = self.watchers[name]
        hooks = watcher.config.hooks
        if not {"before_signal", "after_signal"} & set(hooks):
            deliver()
            return
        if signum == signal.SIGKILL:
            deliver()
        view = self._watcher_view(watcher)
        arguments = {"pid": pid, "signum": signum}

        async def around_the_signal() -> None:
            outcome = await self._run_hook(watcher, "before_signal", arguments, view)
            if signum != signal.SIGKILL:
                if outcome.approved:
                    deliver()
                else:
                    log.info(
                        "%s: the before_signal hook said no: signal %d not sent to pid %d",
                        watcher.name, signum, pid,
                    )
            await self._run_hook(watcher, "after_signal", arguments, view)

        self.hooks.queue(watcher.name, around_the_signal)

    def _deliver(self, pid: int, signum: int, tree: bool = False) -> None:
        handle = self._handles.get(pid)
        if handle is None:
            return
        # With cgroups the leaf is exact (cgroup.kill for SIGKILL), and it may be all that is left
        # of a process whose main pid was already reaped.
        exact = pid in self._exit_pending or tree
        if exact and self.cgroups is not None and self.cgroups.signal(pid, signum, tree=True):
            return
        handle.send_signal(signum, tree=tree)

    def _on_notify(self, pid: int) -> None:
        notify = self._notify.get(pid)
        name = self._owner.get(pid)
        if notify is None or name is None or name not in self.watchers:
            return
        if pid in self._not_execed:
            # Only the exec'd program can talk: its exec succeeded, whatever the pipe says yet.
            self._execed(pid)
        for message in notify.receive():
            self._feed(name, self.watchers[name].notified(pid, message, self._clock()))

    def _match_ready_line(self, origin: Origin, lines: list[Buffer]) -> None:
        """`ready_log_line`: a process not ready yet whose output matches is ready now."""
        watcher = self.watchers.get(origin.watcher)
        if watcher is None or watcher.config.ready_log_line is None:
            return
        pid = origin.pid
        record = watcher.process_by_pid(pid)
        # Searched until ready, stopped (a failed start) or gone; a pid not exec'd yet has no
        # record, and a match is its first sign of life.
        if record is None and pid not in self._not_execed:
            return
        if record is not None and (record.ready or record.state is not ProcessState.RUNNING):
            return
        if not self._ready_search.search(origin, watcher.config.ready_log_line, lines):
            return
        self._ready_search.forget(pid)
        if pid in self._not_execed:
            # Only the exec'd program writes its output: its exec succeeded.
            self._execed(pid)
        self._feed(watcher.name, watcher.output_matched(pid, self._clock()))

    def _forget(self, pid: int) -> None:
        self._not_execed.pop(pid, None)
        self._ready_search.forget(pid)
        notify = self._notify.pop(pid, None)
        if notify is not None:
            if self._loop is not None:
                self._loop.remove_reader(notify.fileno())
            notify.close()
        handle = self._handles.pop(pid, None)
        self._owner.pop(pid, None)
        self._started_wall.pop(pid, None)
        self._stats.forget(pid)
        if handle is not None and self._loop is not None:
            self._loop.remove_reader(handle.pidfd)
            if handle.status_fd is not None:
                self._loop.remove_reader(handle.status_fd)
            handle.close()

    # -- what the control commands read ----------------------------------------------------------

    def process_info(self, pid: int, extended: bool = False) -> Any:
        name = self._owner.get(pid)
        wid = None
        if name is not None and name in self.watchers:
            record = self.watchers[name].process_by_pid(pid)
            wid = record.wid if record is not None else None
        return self._stats.info(pid, extended, wid)

    def process_start_times(self, name: str) -> list[float]:
        """Wall-clock start time of each process of a watcher."""
        return [
            self._started_wall[pid] for pid in self.watchers[name].pids if pid in self._started_wall
        ]

    def dropped_output(self, name: str) -> tuple[int, int]:
        """Lines and bytes of a watcher's output dropped since the arbiter started."""
        lines, size = self.output.drops.totals.get(name, (0, 0))
        return lines, size

    def cgroup_stats(self, name: str) -> dict[str, Any] | None:
        """The kernel's figures for a watcher's cgroup; None when cgroups are off."""
        if self.cgroups is None:
            return None
        return self.cgroups.cgroups.stats(name)

    def signal_descendant(self, name: str, pid: int | None, child: int, signum: int) -> bool:
        """Signal `child`, a descendant of one of the watcher's processes (of `pid` if given),
        through the watcher's signal hooks; False if it is not one."""
        for parent in self.watchers[name].pids:
            if pid not in (None, parent):
                continue
            try:
                descendants = {c.pid for c in psutil.Process(parent).children(recursive=True)}
            except psutil.Error:
                continue
            if child in descendants:
                self._signal_descendant(name, child, signum)
                return True
        return False

    def global_options(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoints.get("endpoint"),
            "pubsub_endpoint": self.endpoints.get("pubsub_endpoint"),
            "output_endpoint": self.endpoints.get("output_endpoint"),
            "stats_endpoint": None,
            "multicast_endpoint": None,
            "check_delay": None,
            "pidfile": self.config.arbiter.pidfile,
            "loglevel": self.config.arbiter.loglevel,
        }

    def watchers_stopped(self) -> asyncio.Future[None]:
        """Done once a stop of the whole arbiter has stopped every watcher."""
        return self.wait_for(
            lambda: self._stopping and all(w.state in HALTED_STATES for w in self.watchers.values())
        )

    def wait_for(self, predicate: Callable[[], bool]) -> asyncio.Future[None]:
        """A future done once `predicate` holds; checked after every batch of actions."""
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        if predicate():
            future.set_result(None)
        else:
            self._waiters.append((predicate, future))
        return future

    def _check_waiters(self) -> None:
        if not self._waiters:
            return
        still = []
        for predicate, future in self._waiters:
            if future.done():
                continue
            if predicate():
                future.set_result(None)
            else:
                still.append((predicate, future))
        self._waiters = still

    # -- configuration reload --------------------------------------------------------------------

    async def reload_config(self) -> str | None:
        """Re-read the config file and apply only what changed; the error if it is broken."""
        self.notifier.reloading()
        try:
            return await self._reload_config()
        finally:
            self.notifier.ready(self.status_line())

    async def _reload_config(self) -> str | None:
        try:
            new, warnings = self._loader(self.config.path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return str(exc)
        for warning in warnings:
            log.warning("%s", warning)
        # New sockets first: if one cannot be bound, nothing has changed yet.
        try:
            self.sockets.open_added(new.sockets)
        except SocketError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return str(exc)
        sockets = self.sockets.changes(new.sockets)
        self.hooks.forget_imports()
        if new.arbiter != self.config.arbiter:
            log.warning("the [circus] section changed: restart circus-sd to apply it")
        old = {w.name: w for w in self.config.watchers}
        fresh = {w.name: w for w in new.watchers}
        old_sockets = [s.name for s in self.config.sockets]
        self.config = new
        removed = [self.watchers[n] for n in old if n not in fresh and n in self.watchers]
        for watcher in reversed(self._by_priority(removed)):
            log.info("%s: removed from the configuration", watcher.name)
            await self.stop_watcher(watcher.name)
            del self.watchers[watcher.name]
            self._forget_leftovers(watcher.name)
            if self.cgroups is not None:
                self.cgroups.remove(watcher.name)
            self.publish(watcher.name, "remove", {})
        # A changed socket is closed and bound again: the watchers using it stop before (the old
        # socket must let go of its address) and start after.
        moved = set(sockets.changed) | set(sockets.removed)
        users = [
            name
            for name, config in fresh.items()
            if name in old
            and self.watchers[name].want is Want.UP
            and moved & (_sockets_of(old[name], old_sockets) | _sockets_of(config, old_sockets))
        ]
        for name in users:
            log.info("%s: restarting it, a socket it uses changed", name)
            async with self.lock(name):
                await self.stop_watcher(name)
        new_sockets = {s.name: s for s in new.sockets}
        for socket_name in sockets.changed:
            try:
                self.sockets.rebind(new_sockets[socket_name])
                log.info("[socket:%s] bound again with its new options", socket_name)
            except SocketError as exc:
                log.error("%s", exc)
                self.last_error = str(exc)
        for socket_name in sockets.removed:
            self.sockets.close(socket_name)
        for name, config in fresh.items():
            if name in old and old[name] != config:
                async with self.lock(name):
                    await self._apply_changed(self.watchers[name], config)
        for name in users:
            async with self.lock(name):
                await self.start_watcher(name)
        added = [self._add_watcher(c) for n, c in fresh.items() if n not in old]
        for watcher in self._by_priority(added):
            log.info("%s: added", watcher.name)
            self.publish(watcher.name, "add", {})
            if watcher.config.autostart:
                await self.start_watcher(watcher.name)
        log.info("configuration reloaded from %s", new.path)
        return None

    async def _apply_changed(self, watcher: Watcher, config: WatcherConfig) -> None:
        """Apply a changed config; the caller holds the watcher's lock."""
        changed = _changed_options(watcher.config, config)
        self._configure_cgroup(config)
        if all(_is_live(name) for name in changed):
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

    # -- executing actions -----------------------------------------------------------------------

    def _feed(self, name: str, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Spawn):
                self._spawn(name, action)
            elif isinstance(action, Signal):
                self._signal(action.pid, action.signum, action.tree)
            elif isinstance(action, StartTimer):
                self._start_timer(name, action.key, action.delay)
            elif isinstance(action, CancelTimer):
                timer = self._timers.pop((name, action.key), None)
                if timer is not None:
                    timer.cancel()
            elif isinstance(action, Publish):
                self.publish(name, action.event, action.payload)
            elif isinstance(action, CallHook):
                self._call_hook(name, action)
            elif isinstance(action, Log):
                log.log(action.level, "%s", action.message)
                if action.level >= logging.ERROR:
                    self.last_error = action.message
        self._check_waiters()
        if self.notifier.enabled and not self._status_scheduled and self._loop is not None:
            self._status_scheduled = True
            self._loop.call_soon(self._update_status)

    def _update_status(self) -> None:
        self._status_scheduled = False
        self.notifier.status(self.status_line())

    def status_line(self) -> str:
        """One line for `systemctl status`: watchers, processes, trouble, last error."""
        active = sum(w.state in RUNNING_STATES for w in self.watchers.values())
        processes = sum(len(w.pids) for w in self.watchers.values())
        parts = [f"{active}/{len(self.watchers)} watchers active, {processes} processes"]
        for state in (WatcherState.PAUSED, WatcherState.FAILED):
            names = sorted(n for n, w in self.watchers.items() if w.state is state)
            if names:
                label = "flapping" if state is WatcherState.PAUSED else "failed"
                parts.append(f"{label}: {', '.join(names)}")
        short = sorted(n for n, w in self.watchers.items() if w.shortage is not None)
        if short:
            parts.append(f"short of resources: {', '.join(short)}")
        if self.last_error:
            parts.append(f"last error: {self.last_error}")
        return "; ".join(parts)

    def publish(self, watcher: str, event: str, payload: dict[str, Any]) -> None:
        self.emit(f"watcher.{topic_name(watcher)}.{event}", payload)

    def emit(self, topic: str, payload: dict[str, Any]) -> None:
        """Publish an event on any topic (the `publish` command: `plugin.<name>.<event>`)."""
        body = {**payload, "time": time.time()}
        for listener in self.listeners:
            listener(topic, body)

    def _start_timer(self, name: str, key: Hashable, delay: float) -> None:
        assert self._loop is not None
        old = self._timers.pop((name, key), None)
        if old is not None:
            old.cancel()
        self._timers[(name, key)] = self._loop.call_later(delay, self._on_timer, name, key)

    def _on_timer(self, name: str, key: Hashable) -> None:
        self._timers.pop((name, key), None)
        watcher = self.watchers.get(name)
        if watcher is not None:
            self._feed(name, watcher.timer(key, self._clock()))

    def _spawn(self, name: str, action: Spawn) -> None:
        assert self._loop is not None
        watcher = self.watchers[name]
        config = watcher.config
        extra_env = {}
        refusal = self._fd_reserve.refusal()
        if refusal is not None:
            # Short of descriptors, as if a pipe had failed with EMFILE: a shortage, not a failure.
            self._loop.call_soon(self._spawn_failed, name, action.spawn_id, refusal, errno.EMFILE)
            return
        pending = self._pending_spawns[(name, action.spawn_id)] = PendingSpawn()
        try:
            if config.notify:
                notify = self._notify_sockets.open(name, action.wid, config.uid, config.gid)
                pending.notify = notify
                extra_env["NOTIFY_SOCKET"] = notify.path
            output = pending.output = self.output.prepare(config, action.wid)
            cgroup = (
                self.cgroups.prepare(name, action.wid, action.spawn_id) if self.cgroups else None
            )
            layout = socket_layout(config, self.sockets.names())
            socket_fds, own_sockets = self.sockets.for_process([n for n, _fd in layout])
            request = build_request(
                config,
                action.wid,
                self._defaults,
                extra_env,
                [*output.fd_targets, *(fd for _name, fd in layout)],
                output.journal_streams,
                cgroup=cgroup,
                sockets=layout,
            )
        except (SpawnPlanError, SocketError, OSError) as exc:
            # Answer on the next turn, like a real spawn, so this batch of actions finishes first.
            code = exc.errno if isinstance(exc, OSError) else None
            self._loop.call_soon(self._spawn_failed, name, action.spawn_id, str(exc), code)
            return
        future = self.spawner.spawn(request, [*output.child_fds, *socket_fds])
        for sock in own_sockets:
            sock.close()  # the spawner holds its copy; so_reuseport ones are the child's alone
        self._unclaimed_spawns += 1
        output.sent()
        future.add_done_callback(functools.partial(self._on_spawned, name, action.spawn_id))

    def _spawn_failed(
        self,
        name: str,
        spawn_id: int,
        reason: str,
        code: int | None = None,
        spawner_lost: bool = False,
    ) -> None:
        """The spawn made no process. `code`: the errno of a failure here or in the spawner,
        which tells a shortage apart (never the child's own: Watcher.spawn_failed);
        `spawner_lost`: the spawner was lost before it answered (deferred, not failed)."""
        pending = self._pending_spawns.pop((name, spawn_id), None)
        if pending is not None:
            pending.discard()
        if self.cgroups is not None:
            self.cgroups.discard(name, spawn_id)
        watcher = self.watchers.get(name)
        if watcher is not None:
            self._feed(
                name, watcher.spawn_failed(spawn_id, reason, self._clock(), code, spawner_lost)
            )

    def _on_spawned(
        self, name: str, spawn_id: int, future: asyncio.Future[tuple[int, int]]
    ) -> None:
        assert self._loop is not None
        self._unclaimed_spawns -= 1
        try:
            pid, status_fd = future.result()
        except SpawnError as exc:
            lost = isinstance(exc, SpawnerLost)
            self._spawn_failed(name, spawn_id, f"spawn: {exc.strerror or exc}", exc.errno, lost)
            return
        try:
            handle = ProcessHandle(pid, status_fd)
        except OSError as exc:
            # No pidfd (EMFILE): a child we cannot watch is killed; it is still our unreaped
            # child, so its pid cannot have been reused. _reap_strays collects it.
            os.close(status_fd)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._spawn_failed(name, spawn_id, f"spawn: {exc.strerror or exc}", exc.errno)
            return
        self._handles[pid] = handle
        self._owner[pid] = name
        if self._leftovers is not None:
            self._leftovers.session_started(pid, name)  # it calls setsid: its session is its pid
        self._started_wall[pid] = time.time()
        self._loop.add_reader(handle.pidfd, self._on_exit, pid)
        pending = self._pending_spawns.pop((name, spawn_id), PendingSpawn())
        if pending.notify is not None:
            self._notify[pid] = pending.notify
            self._loop.add_reader(pending.notify.fileno(), self._on_notify, pid)
        if pending.output is not None:
            pending.output.attach(pid)
        if self.cgroups is not None:
            self.cgroups.claimed(name, spawn_id, pid)
        if name not in self.watchers:
            handle.send_signal(signal.SIGKILL, tree=True)
        else:
            # The watcher hears of it once exec succeeded (_on_status): a process "exists" for
            # status, READY=1 and the spawn event only as the program it was started for. This
            # also means nothing signals it before exec, while it still is a copy of the spawner
            # (whose handlers swallow TERM, INT, HUP and QUIT).
            self._not_execed[pid] = spawn_id
        # A batch is answered after its last clone: its first children have often exec'd by
        # now, and their status pipes need no round through the loop.
        if handle.drain_status():
            self._status_done(pid, handle)
        else:
            self._loop.add_reader(status_fd, self._on_status, pid)
        if self._strays_pending and not self._spawns_unsettled():
            self._reap_strays()

    def _on_status(self, pid: int) -> None:
        handle = self._handles[pid]
        if handle.drain_status():
            assert self._loop is not None and handle.status_fd is not None
            self._loop.remove_reader(handle.status_fd)
            self._status_done(pid, handle)

    def _status_done(self, pid: int, handle: ProcessHandle) -> None:
        """The exec-status pipe is at EOF: exec succeeded, or the child said why it did not."""
        assert self._loop is not None
        # Exec failed: keep what the child said until its exit is reaped.
        if not handle.exec_error():
            handle.close_status()
            # The children of a batch exec together: their watchers hear of them in one go
            # (one round of waiter checks, not one per process).
            if not self._execed_batch:
                self._loop.call_soon(self._execed_all)
            self._execed_batch.append(pid)

    def _execed_all(self) -> None:
        pids, self._execed_batch = self._execed_batch, []
        self._execed(*pids)

    def _execed(self, *pids: int) -> None:
        """The processes exec'd their programs (those not told already, not forgotten)."""
        spawns: dict[str, list[tuple[int, int]]] = {}
        for pid in pids:
            spawn_id = self._not_execed.pop(pid, None)
            name = self._owner.get(pid)
            if spawn_id is not None and name in self.watchers:
                assert name is not None
                spawns.setdefault(name, []).append((spawn_id, pid))
        for name, batch in spawns.items():
            self._feed(name, self.watchers[name].spawned_all(batch, self._clock()))

    def _on_exit(self, pid: int) -> None:
        assert self._loop is not None
        handle = self._handles[pid]
        exit_code = handle.reap()
        if exit_code is None:
            return
        exec_error = handle.exec_error()
        name = self._owner[pid]
        if pid in self._not_execed:
            if exec_error is not None:
                # Never became its program: a failed spawn, not a process that exited.
                spawn_id = self._not_execed.pop(pid)
                if self.cgroups is not None:
                    self.cgroups.main_exited(pid, stopping=False)
                self._forget(pid)
                # No errno: what the child says of its own setup or exec is a failed start,
                # never a shortage (its rlimits, identity and cwd applied: restart_policy).
                self._spawn_failed(name, spawn_id, exec_error)
                return
            self._execed(pid)  # exec'd, then exited before we read its status pipe
        if self.cgroups is not None and self.cgroups.main_exited(pid, self._is_stopping(name, pid)):
            # Descendants remain in its leaf: the process ends when the leaf is empty.
            self._loop.remove_reader(handle.pidfd)
            self._exit_pending[pid] = (name, exit_code, exec_error)
            return
        self._finish_exit(pid, name, exit_code, exec_error)

    def _is_stopping(self, name: str, pid: int) -> bool:
        watcher = self.watchers.get(name)
        record = watcher.process_by_pid(pid) if watcher is not None else None
        return record is not None and record.state in STOPPING_PROCESS_STATES

    def _on_leaf_empty(self, pid: int) -> None:
        pending = self._exit_pending.pop(pid, None)
        if pending is not None:
            self._finish_exit(pid, *pending)

    def _finish_exit(self, pid: int, name: str, exit_code: int, exec_error: str | None) -> None:
        self._forget(pid)
        # Its children, if any are left, are ours now.
        self._scan_leftovers_soon()
        watcher = self.watchers.get(name)
        if watcher is not None:
            self._reap_hooks(watcher, pid, exit_code)
            self._feed(name, watcher.exited(pid, exit_code, self._clock(), exec_error))

    def _reap_hooks(self, watcher: Watcher, pid: int, exit_code: int) -> None:
        """before_reap and after_reap, queued before the watcher decides what follows the exit
        (so that, e.g., after_stop comes after them). They never delay a respawn."""
        if not {"before_reap", "after_reap"} & set(watcher.config.hooks):
            return
        view = self._watcher_view(watcher)
        reaped_at = time.time()

        async def reap_hooks() -> None:
            arguments: dict[str, Any] = {"process_pid": pid, "time": reaped_at}
            await self._run_hook(watcher, "before_reap", arguments, view)
            arguments.update(exit_code=exit_code, process_status=PROCESS_GONE)
            await self._run_hook(watcher, "after_reap", arguments, view)

        self.hooks.queue(watcher.name, reap_hooks)

    # -- hooks -----------------------------------------------------------------------------------

    def _watcher_view(self, watcher: Watcher) -> WatcherView:
        """What a hook sees of the watcher: a snapshot taken when the hook is due."""
        return watcher_view(
            watcher.name,
            option_values(watcher.config),
            watcher.pids,
            watcher.config.target_processes,
            watcher.state.circus_status,
        )

    def _arbiter_view(self) -> ArbiterView:
        return ArbiterView(sorted(self.watchers), self.endpoints.get("endpoint"))

    async def _run_hook(
        self, watcher: Watcher, hook: str, arguments: dict[str, Any], view: WatcherView
    ) -> HookOutcome:
        """Call `hook` if the watcher (still) has it; a missing hook approves."""
        spec = watcher.config.hooks.get(hook)
        if spec is None:
            return HookOutcome(approved=True)
        return await self.hooks.call(
            spec,
            hook,
            arguments,
            watcher.config.hook_timeout,
            view,
            self._arbiter_view(),
            _hook_search_path(self.config.path, watcher.config),
        )

    def _call_hook(self, name: str, action: CallHook) -> None:
        """A hook the watcher asked for: queued behind its earlier hooks; a gate's outcome goes
        back to the watcher as `hook_done` (unless the watcher was replaced meanwhile)."""
        watcher = self.watchers.get(name)
        if watcher is None:
            return
        view = self._watcher_view(watcher)
        arguments = dict(action.kwargs)
        future = self.hooks.queue(
            name, lambda: self._run_hook(watcher, action.hook, arguments, view)
        )
        if action.token is None:
            return

        def answer(done: asyncio.Future[HookOutcome]) -> None:
            if done.cancelled() or self.watchers.get(name) is not watcher:
                return
            approved = done.exception() is None and done.result().approved
            self._feed(name, watcher.hook_done(action.token, approved, self._clock()))

        future.add_done_callback(answer)

    async def extended_stats(self, name: str, pid: int, stats: Any) -> Any:
        """Circus's `extended_stats` hook: it may add to a process's `stats --extended`."""
        watcher = self.watchers.get(name)
        if watcher is None or "extended_stats" not in watcher.config.hooks:
            return stats
        mine = copy.deepcopy(stats)  # a hook that times out may still write into it
        outcome = await self._run_hook(
            watcher, "extended_stats", {"pid": pid, "stats": mine}, self._watcher_view(watcher)
        )
        return mine if outcome.error is None else stats

    def _on_oom(self, name: str, kills: int) -> None:
        log.warning("%s: the kernel's OOM killer killed %d process(es) at memory_max", name, kills)
        self.publish(name, "oom", {"oom_kill": kills})

    def freeze(self, name: str, frozen: bool) -> None:
        if self.cgroups is None:
            raise OSError("freezing needs per-watcher cgroups, which are off here")
        self.cgroups.freeze(name, frozen)
        self.publish(name, "freeze" if frozen else "thaw", {})

    def _on_sigchld(self) -> None:
        self._child_exited.set()
        self._reap_strays()

    def _spawns_unsettled(self) -> bool:
        return bool(self.spawner.in_flight or self._unclaimed_spawns)

    def _reap_strays(self) -> None:
        # Children cloned by the spawner are ours before we learn their pid: reaping an unknown
        # zombie now could steal a fresh child's status, so wait for the spawner's answers, and
        # for _on_spawned to take each in (a future's callbacks run a loop turn after it is set).
        if self._spawns_unsettled():
            self._strays_pending = True
            return
        self._strays_pending = False
        # The spawner's processes are its handle's to reap (it replaces a lost one).
        for pid, status in reap_strays(set(self._handles) | self.spawner.pids):
            log.debug("reaped orphan %d (status %d)", pid, status)
            # Its children, if any, are ours now.
            self._scan_leftovers_soon()

    # -- children of a lost spawner ------------------------------------------------------------

    def _kill_lost_clones(self, since: float) -> None:
        """A lost spawner may have cloned children for requests it never answered: ours
        (CLONE_PARENT), of pids we never learned, they would run unsupervised beside the
        replacements their watchers spawn. Called by the spawner's handle once the lost spawner
        is gone and before the next one clones anything, after the answers received before the
        loss were taken in (_on_spawned): our children that are neither known processes, nor
        spawners, nor attributed orphans, and that started since `since` in their own session
        (or still in ours, before their setsid) are those clones (leftovers.py).

        They are SIGKILLed, their process group with them (they lead it once past setsid), not
        adopted: they never became known workers, their watchers already count them as deferred
        spawns and ask for others, and whether they exec'd (their status pipe went with the
        spawner) or for which watcher (/proc/PID/environ holds the spawner's environment before
        exec, and may be unreadable or rewritten after) cannot be told reliably."""
        spawners = self.spawner.pids
        attributed = (
            {leftover.pid for leftover in self._leftovers.found()}
            if self._leftovers is not None
            else set()
        )
        candidates = [
            pid
            for pid in own_children()
            if pid not in self._handles and pid not in spawners and pid not in attributed
        ]
        clones = clones_of_a_lost_spawner(candidates, since, os.getsid(0))
        for pid, leads_session in clones:
            log.warning(
                "killing %s: cloned by the lost spawner, its pid never answered", _describe_pid(pid)
            )
            # Our unreaped child: its pid (and, once it leads one, its group's) is not reused.
            if leads_session:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # -- orphans of workers, without cgroups (circus_sd/leftovers.py) ----------------------------

    def _scan_leftovers_soon(self) -> None:
        """Look for workers' orphans once this loop turn is done (exits come in batches)."""
        if self._leftovers is None or self._leftover_scan_due or self._loop is None:
            return
        self._leftover_scan_due = True
        self._loop.call_soon(self._scan_leftovers)

    def _scan_leftovers(self) -> None:
        """Attribute our children that are neither workers nor spawners to watchers, by the
        worker session they are in."""
        self._leftover_scan_due = False
        if self._leftovers is None or self._loop is None:
            return
        spawners = self.spawner.pids
        candidates = [p for p in own_children() if p not in self._handles and p not in spawners]
        for leftover in self._leftovers.scan(candidates, self._handles.keys()):
            self._loop.add_reader(leftover.pidfd, self._leftover_exited, leftover.pid)
            log.info(
                "%s: %s was left behind by its process %d; it is stopped with the watcher",
                leftover.watcher, _describe_pid(leftover.pid), leftover.session,
            )
            self.publish(
                leftover.watcher, "orphan", {"pid": leftover.pid, "session": leftover.session}
            )
        self._check_waiters()

    def _leftover_exited(self, pid: int) -> None:
        assert self._leftovers is not None
        leftover = self._leftovers.get(pid)
        if leftover is not None:
            self._drop_leftover(leftover)
        self._check_waiters()
        self._scan_leftovers_soon()  # its own children are ours now

    def _drop_leftover(self, leftover: Leftover) -> None:
        assert self._leftovers is not None
        if self._loop is not None:
            self._loop.remove_reader(leftover.pidfd)
        self._leftovers.gone(leftover.pid)

    def _forget_leftovers(self, name: str) -> None:
        """A watcher removed: orphans of its workers are no longer its (a stop stopped them)."""
        if self._leftovers is None:
            return
        self._leftovers.forget_sessions(name)
        for leftover in self._leftovers.of(name):
            self._drop_leftover(leftover)

    def _leftovers_changed(self, name: str, before: frozenset[int]) -> bool:
        return self._leftovers is not None and self._leftovers.pids(name) != before

    async def _stop_leftovers(self, name: str) -> None:
        """Stop the orphans of a watcher's workers as its processes are stopped: its
        `stop_signal`, then SIGKILL after its `graceful_timeout`. Their own children, adopted
        as each exits, are stopped too."""
        if self._leftovers is None:
            return
        assert self._loop is not None
        self._scan_leftovers()
        if not self._leftovers.of(name):
            return
        config = self.watchers[name].config
        if self._stopping:
            # Beyond what stop_all asked of systemd for the watcher's own processes.
            self.notifier.extend_timeout(config.graceful_timeout + _KILLED_WAIT)
        signum = config.stop_signal
        deadline = self._loop.time() + config.graceful_timeout
        signalled: set[int] = set()
        while left := self._leftovers.pids(name):
            if signum != signal.SIGKILL and self._loop.time() >= deadline:
                signum, signalled = signal.SIGKILL, set()
                deadline = self._loop.time() + _KILLED_WAIT
            for leftover in self._leftovers.of(name):
                if leftover.pid in signalled:
                    continue
                signalled.add(leftover.pid)
                what = f"{name}: {_describe_pid(leftover.pid)}, left behind by its process"
                if signum == signal.SIGKILL and signum != config.stop_signal:
                    log.warning("%s %d, still running after graceful_timeout: SIGKILL",
                                what, leftover.session)
                else:
                    log.info("%s %d: stopping it", what, leftover.session)
                leftover.send_signal(signum)
            changed = self.wait_for(functools.partial(self._leftovers_changed, name, left))
            try:
                await asyncio.wait_for(changed, max(0.0, deadline - self._loop.time()))
            except TimeoutError:
                if signum == signal.SIGKILL:
                    log.error("%s: pids %s, left behind by its processes, survive SIGKILL",
                              name, sorted(self._leftovers.pids(name)))
                    return


# How long processes may take to vanish once SIGKILLed (unless stuck in the kernel: D state).
_KILLED_WAIT = 5.0


def _changed_options(old: WatcherConfig, new: WatcherConfig) -> list[str]:
    return [
        field.name
        for field in dataclasses.fields(WatcherConfig)
        if field.compare and getattr(old, field.name) != getattr(new, field.name)
    ]


def _is_live(field_name: str) -> bool:
    for field in dataclasses.fields(WatcherConfig):
        if field.name == field_name:
            declared = option_of(field)
            if declared is None:
                return bool(field.metadata.get("live"))
            return declared.live
    return False


def _sockets_of(config: WatcherConfig, all_sockets: Iterable[str]) -> set[str]:
    """The sockets a watcher's processes get."""
    names = set(config.listen_fds)
    if config.stdin_socket is not None:
        names.add(config.stdin_socket)
    if config.use_sockets:
        names.update(all_sockets)
    return names


def _stop_time(config: WatcherConfig) -> float:
    """How long stopping a watcher may take: graceful timeout, and its stop hooks'."""
    hooks = sum(name in config.hooks for name in ("before_stop", "after_stop"))
    return config.graceful_timeout + hooks * config.hook_timeout


def _hook_search_path(config_path: str, config: WatcherConfig) -> list[str]:
    """Where hooks are imported from: the watcher's PYTHONPATH (as Circus) and the config's
    directory."""
    search = [p for p in config.env.get("PYTHONPATH", "").split(os.pathsep) if p and "$(" not in p]
    return [*search, os.path.dirname(config_path)]


def _describe_pid(pid: int) -> str:
    try:
        return f"pid {pid} ({psutil.Process(pid).name()})"
    except psutil.Error:
        return f"pid {pid}"
