"""The watchdog plugin (Circus's WatchDog): processes send UDP heartbeats `pid;timestamp`; one
silent for `loop_rate * max_count` seconds is killed (SIGKILL) and its watcher restarts it.

Watched: the processes of the watchers matching `watchers_regex`, learnt from `spawn`/`reap`
events and from `status` (at start and at each look). Never the plugins' own watchers
(`plugin:*`): with Circus's default regex the watchdog would have killed itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import signal
from collections.abc import Mapping

from circus_sd.config.options import decimal_integer, integer, option, text
from circus_sd.config.plugin_options import parse_options, port_number, positive_number, regex
from circus_sd.config.plugin_watchers import WATCHER_PREFIX
from circus_sd.plugins.base import CommandFailed, Plugin, WatcherEvent


@dataclasses.dataclass(frozen=True)
class WatchDogOptions:
    loop_rate: float = option(positive_number, 60.0, "Seconds between two looks for silence.")
    max_count: int = option(
        integer(1), 3, "A process silent for `loop_rate` x `max_count` seconds is killed."
    )
    watchers_regex: str = option(
        regex, ".*", "Watchers whose processes must send heartbeats (re.match on the name)."
    )
    msg_regex: str = option(
        regex,
        "^(?P<pid>.*);(?P<timestamp>.*)$",
        "How to read a heartbeat datagram; its group `pid` names the sender.",
    )
    ip: str = option(text, "127.0.0.1", "Address the UDP socket is bound to.")
    port: int = option(port_number, 1664, "UDP port of the heartbeats.")


@dataclasses.dataclass
class Watched:
    watcher: str
    last_beat: float


class HeartbeatTable:
    """Which processes are watched and when each was last heard of (pure; times given)."""

    def __init__(self) -> None:
        self.processes: dict[int, Watched] = {}

    def add(self, watcher: str, pid: int, now: float) -> None:
        """A process to watch; its spawn counts as its first sign of life."""
        self.processes[pid] = Watched(watcher, now)

    def remove(self, pid: int) -> None:
        self.processes.pop(pid, None)

    def beat(self, pid: int, now: float) -> bool:
        """A heartbeat; False when `pid` is not watched."""
        watched = self.processes.get(pid)
        if watched is None:
            return False
        watched.last_beat = now
        return True

    def silent(self, now: float, limit: float) -> list[tuple[int, Watched, float]]:
        """(pid, record, seconds of silence) of each process silent for more than `limit`."""
        return [
            (pid, watched, now - watched.last_beat)
            for pid, watched in self.processes.items()
            if now - watched.last_beat > limit
        ]


class _Heartbeats(asyncio.DatagramProtocol):
    def __init__(self, plugin: WatchDog) -> None:
        self.plugin = plugin

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.plugin.heartbeat(data)


class WatchDog(Plugin):
    options_class = WatchDogOptions

    def configure(self, options: Mapping[str, str]) -> None:
        self.settings, _unknown = parse_options(WatchDogOptions, options)
        self.table = HeartbeatTable()
        self._watchers = re.compile(self.settings.watchers_regex)
        self._message = re.compile(self.settings.msg_regex)
        self._transport: asyncio.DatagramTransport | None = None

    def watches(self, watcher: str) -> bool:
        return not watcher.startswith(WATCHER_PREFIX) and bool(self._watchers.match(watcher))

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def handle_init(self) -> None:
        loop = asyncio.get_running_loop()
        # A watchdog that cannot hear would kill every process: failing is better (restarted).
        self._transport, _protocol = await loop.create_datagram_endpoint(
            lambda: _Heartbeats(self), local_addr=(self.settings.ip, self.settings.port)
        )
        self.log.info("heartbeats on udp %s:%d", self.settings.ip, self.settings.port)
        await self.discover()
        self.every(self.settings.loop_rate, self.look_after)

    async def discover(self) -> None:
        """Bring the table in line with `status`: events are faster, but one sent before our
        subscription was live would be missed."""
        current = {
            pid: name
            for name, status in (await self.statuses()).items()
            if self.watches(name)
            for pid in status.pids
        }
        for pid, name in current.items():
            if pid not in self.table.processes:
                self.table.add(name, pid, self.now())
        for pid in set(self.table.processes) - set(current):
            self.table.remove(pid)

    async def handle_stop(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def handle_watcher_event(self, event: WatcherEvent) -> None:
        if event.pid is None or not self.watches(event.watcher):
            return
        if event.kind == "spawn":
            self.table.add(event.watcher, event.pid, self.now())
        elif event.kind == "reap":
            self.table.remove(event.pid)

    def heartbeat(self, data: bytes) -> None:
        found = self._message.match(data.decode(errors="replace").strip())
        pid_text = found.groupdict().get("pid") if found else None
        pid = decimal_integer(pid_text.strip()) if pid_text is not None else None
        if pid is None:
            self.log.debug("not a heartbeat: %r", data[:100])
            return
        if not self.table.beat(pid, self.now()):
            self.log.debug("heartbeat from %s, which is not watched", pid_text)

    async def look_after(self) -> None:
        await self.discover()
        limit = self.settings.loop_rate * self.settings.max_count
        for pid, watched, silence in self.table.silent(self.now(), limit):
            self.log.warning(
                "%s: process %d sent no heartbeat for %.1f s: killing it",
                watched.watcher, pid, silence,
            )
            # Once: the next look may come before its reap.
            watched.last_beat = self.now()
            try:
                await self.call(
                    "signal", name=watched.watcher, pid=pid, signum=int(signal.SIGKILL)
                )
            except CommandFailed as error:
                self.log.warning("%s: process %d: %s", watched.watcher, pid, error.reason)
                self.table.remove(pid)
                continue
            await self.publish("kill", watcher=watched.watcher, pid=pid, silent_for=silence)
