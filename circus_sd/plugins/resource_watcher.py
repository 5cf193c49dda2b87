"""The resource_watcher plugin (Circus's ResourceWatcher): restarts a process that stays over
its CPU or memory limits, or signals a child of it that does.

Circus compared the *largest* figure among a watcher's processes and restarted the whole
watcher; here each process (and, with `process_children`, each descendant) is counted on its
own, and only the one over its limits is restarted (`kill`: its stop signal, then SIGKILL after
`graceful_timeout`; the watcher starts a replacement) or signalled (`child_signal`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Hashable, Mapping, Sequence

import psutil

from circus_sd.config.options import boolean, integer, number, option, signal_number, text
from circus_sd.config.plugin_options import (
    MemoryLimit,
    PluginOptionError,
    memory_limit,
    optional_number,
    parse_options,
    positive_number,
)
from circus_sd.plugins.base import CommandFailed, Plugin
from circus_sd.plugins.load_signals import CpuMeter
from circus_sd.sizes import human_bytes

_NINETY_PERCENT: MemoryLimit | None = MemoryLimit(90.0, absolute=False)


@dataclasses.dataclass(frozen=True)
class ResourceWatcherOptions:
    watcher: str = option(text, "", "The watcher to look after (required).")
    service: str = option(text, "", "Circus's old name of `watcher`.")
    loop_rate: float = option(positive_number, 60.0, "Seconds between two checks.")
    max_cpu: float = option(
        number(), 90.0, "CPU % (of one core, over the last `loop_rate`) above which a check "
        "counts (0 = no limit).",
    )
    min_cpu: float | None = option(
        optional_number, None, "CPU % at or below which a check counts (a stuck process)."
    )
    # (option() makes a dataclasses.field: the default is not shared mutable state.)
    max_mem: MemoryLimit | None = option(  # noqa: RUF009
        memory_limit,
        _NINETY_PERCENT,
        "Memory above which a check counts: a number is a % of RAM, `200M` or `1.5G` a "
        "resident size.",
    )
    min_mem: MemoryLimit | None = option(  # noqa: RUF009
        memory_limit, None, "Memory below which a check counts (% or size, as `max_mem`)."
    )
    health_threshold: float = option(
        number(), 75.0, "A check counts when (CPU % + memory %) / 2 is above this (0 = off)."
    )
    max_count: int = option(
        integer(0), 3, "Checks over (or under) a limit in a row that are tolerated; one more "
        "and the process is restarted.",
    )
    process_children: bool = option(
        boolean, False, "Also check each descendant of the processes, and signal it."
    )
    child_signal: int = option(
        signal_number, int(signal.SIGTERM), "The signal sent to a descendant over its limits."
    )
    max_restarts: int = option(
        integer(0), 5, "Restarts in a row (no check within every limit between them) before "
        "giving up until the processes are within their limits again (0 = never give up). "
        "Each restart in a row waits twice as many checks as the one before.",
    )

    def __post_init__(self) -> None:
        if not (self.watcher or self.service).strip():
            raise PluginOptionError("watcher", "required")

    @property
    def target(self) -> str:
        return self.watcher or self.service


@dataclasses.dataclass(frozen=True)
class Usage:
    """One process at one check; `cpu` is None until two checks have measured it."""

    cpu: float | None
    mem_percent: float
    rss: int


class LimitCounter:
    """Circus's counting, per process: a check over (or under) a limit adds one to that limit's
    count, a check within it resets the count; more than `max_count` in a row means act."""

    def __init__(self, options: ResourceWatcherOptions) -> None:
        self.options = options
        self._counts: dict[Hashable, dict[str, int]] = {}

    def violations(self, usage: Usage) -> dict[str, str]:
        """The limits this check passes: {kind: what was measured}."""
        o = self.options
        found = {}
        if usage.cpu is not None:
            if o.max_cpu and usage.cpu > o.max_cpu:
                found["over_cpu"] = f"cpu {usage.cpu:.1f}% > {o.max_cpu:g}%"
            if o.min_cpu is not None and usage.cpu <= o.min_cpu:
                found["under_cpu"] = f"cpu {usage.cpu:.1f}% <= {o.min_cpu:g}%"
            health = (usage.cpu + usage.mem_percent) / 2
            if o.health_threshold and health > o.health_threshold:
                found["health"] = f"health {health:.1f} > {o.health_threshold:g}"
        if o.max_mem is not None and o.max_mem.over(usage.rss, usage.mem_percent):
            found["over_mem"] = f"memory {_memory(usage, o.max_mem)} > {o.max_mem}"
        if o.min_mem is not None and o.min_mem.under(usage.rss, usage.mem_percent):
            found["under_mem"] = f"memory {_memory(usage, o.min_mem)} < {o.min_mem}"
        return found

    def check(self, key: Hashable, usage: Usage) -> list[str]:
        """The limits passed more than `max_count` times in a row by `key`, which then starts
        counting afresh; [] while it is tolerated."""
        before = self._counts.get(key, {})
        passed = self.violations(usage)
        counts = {kind: before.get(kind, 0) + 1 for kind in passed}
        self._counts[key] = counts
        if counts and max(counts.values()) > self.options.max_count:
            del self._counts[key]
            return list(passed.values())
        return []

    def count(self, key: Hashable) -> int:
        """The longest run of checks over (or under) a limit that `key` is in."""
        return max(self._counts.get(key, {}).values(), default=0)

    def keep_only(self, keys: set[Hashable]) -> None:
        """Forget processes that are gone."""
        for key in list(self._counts):
            if key not in keys:
                del self._counts[key]


class RestartBackoff:
    """Restarts of a watcher's processes in a row, so that a process over its limits from the
    moment it starts is not restarted every few checks for ever: the n-th restart in a row
    waits 2**(n-1) checks after the previous one, and after `max_restarts` in a row the plugin
    gives up until a check finds every process within its limits."""

    # The longest wait between two restarts, in checks.
    LONGEST = 64

    def __init__(self, max_restarts: int) -> None:
        self.max_restarts = max_restarts
        self.in_row = 0
        self.total = 0
        self._check = 0
        self._allowed_from = 0
        # Giving up is said once per episode.
        self.reported = False

    def checked(self, all_within: bool) -> None:
        """A check is done; `all_within`: every process was within every limit."""
        self._check += 1
        if all_within:
            self.in_row = 0
            self._allowed_from = 0
            self.reported = False

    @property
    def given_up(self) -> bool:
        return bool(self.max_restarts) and self.in_row >= self.max_restarts

    def allows(self) -> bool:
        return not self.given_up and self._check >= self._allowed_from

    def restarted(self) -> None:
        self.in_row += 1
        self.total += 1
        self._allowed_from = self._check + min(2 ** (self.in_row - 1), self.LONGEST)


def _memory(usage: Usage, limit: MemoryLimit) -> str:
    return human_bytes(usage.rss) if limit.absolute else f"{usage.mem_percent:.1f}%"


class ResourceWatcher(Plugin):
    options_class = ResourceWatcherOptions
    topics = ()

    def configure(self, options: Mapping[str, str]) -> None:
        self.settings, _unknown = parse_options(ResourceWatcherOptions, options)
        self.counter = LimitCounter(self.settings)
        self.meter = CpuMeter()
        self._missing = False
        self.backoff = RestartBackoff(self.settings.max_restarts)

    async def handle_init(self) -> None:
        self.every(self.settings.loop_rate, self.look_after, first=0.0)

    def measure(self, pids: Sequence[int]) -> dict[int, Usage]:
        now = asyncio.get_running_loop().time()
        used, elapsed = self.meter.sample(pids, now)
        found = {}
        for pid in pids:
            try:
                process = psutil.Process(pid)
                with process.oneshot():
                    rss = process.memory_info().rss
                    percent = process.memory_percent()
            except psutil.Error:
                continue
            cpu = None
            if elapsed and pid in used:
                cpu = 100.0 * used[pid] / elapsed
            found[pid] = Usage(cpu, percent, rss)
        return found

    async def look_after(self) -> None:
        watcher = self.settings.target
        try:
            status = await self.status(watcher)
        except CommandFailed as error:
            if not self._missing:
                self.log.warning("%s: %s", watcher, error.reason)
            self._missing = True
            return
        self._missing = False
        children: dict[int, int] = {}  # descendant -> the process it descends from
        if self.settings.process_children:
            for pid in status.pids:
                try:
                    for descendant in psutil.Process(pid).children(recursive=True):
                        children[descendant.pid] = pid
                except psutil.Error:
                    continue
        usage = self.measure([*status.pids, *children])
        # A clean check ends a run of restarts only if it measured every process fully: a
        # check between a kill and the replacement (no pids), or a new process's first (no
        # CPU figure yet), says nothing about whether the restarts helped.
        measured = [usage[pid] for pid in status.pids if pid in usage]
        self.backoff.checked(
            bool(measured)
            and len(measured) == len(status.pids)
            and all(u.cpu is not None and not self.counter.violations(u) for u in measured)
        )
        keys: set[Hashable] = set()
        for pid in status.pids:
            if pid in usage:
                keys.add(pid)
                reasons = self.counter.check(pid, usage[pid])
                if reasons:
                    await self.restart(watcher, pid, reasons)
        for child, parent in children.items():
            if child in usage:
                keys.add(("child", child))
                reasons = self.counter.check(("child", child), usage[child])
                if reasons:
                    await self.signal_child(watcher, parent, child, reasons)
        self.counter.keep_only(keys)

    async def restart(self, watcher: str, pid: int, reasons: list[str]) -> None:
        if not self.backoff.allows():
            if self.backoff.given_up and not self.backoff.reported:
                self.backoff.reported = True
                self.log.error(
                    "%s: gave up restarting: %d restarts in a row did not bring its processes "
                    "within their limits (process %d: %s); trying again once they are",
                    watcher, self.settings.max_restarts, pid, ", ".join(reasons),
                )
                await self.publish("gave_up", watcher=watcher, pid=pid, reasons=reasons)
            return
        self.log.warning(
            "%s: restarting process %d: %s for more than %d check(s) (restart %d in a row)",
            watcher, pid, ", ".join(reasons), self.settings.max_count, self.backoff.in_row + 1,
        )
        try:
            await self.call("kill", name=watcher, pid=pid)
        except CommandFailed as error:
            self.log.warning("%s: process %d: %s", watcher, pid, error.reason)
            return
        self.backoff.restarted()
        await self.publish(
            "restart", watcher=watcher, pid=pid, reasons=reasons,
            in_row=self.backoff.in_row, restarts=self.backoff.total,
        )

    async def signal_child(self, watcher: str, parent: int, child: int, reasons: list[str]) -> None:
        signum = self.settings.child_signal
        self.log.warning(
            "%s: sending %s to %d (a descendant of %d): %s for more than %d check(s)",
            watcher, signal.Signals(signum).name, child, parent, ", ".join(reasons),
            self.settings.max_count,
        )
        try:
            await self.call("signal", name=watcher, pid=parent, childpid=child, signum=signum)
        except CommandFailed as error:
            self.log.warning("%s: descendant %d: %s", watcher, child, error.reason)
            return
        await self.publish(
            "signal", watcher=watcher, pid=parent, child_pid=child, signum=signum, reasons=reasons
        )
