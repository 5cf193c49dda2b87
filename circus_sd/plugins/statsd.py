"""The statsd plugins (Circus's StatsdEmitter and FullStats): events counted, and figures of
the watchers' processes as gauges, sent over UDP to a statsd daemon.

Buckets are Circus's: `circus.<application_name>.watcher.<watcher>.<event>` counters, and with
FullStats `circus.<application_name>.watcher._stats.<watcher>.<figure>` gauges.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import re
import socket
from collections.abc import Mapping

from circus_sd.config.options import number, option, text
from circus_sd.config.plugin_options import (
    PluginOptionError,
    parse_options,
    port_number,
    positive_number,
)
from circus_sd.config.plugin_watchers import WATCHER_PREFIX
from circus_sd.plugins.base import Plugin, WatcherEvent
from circus_sd.plugins.stats_reply import by_watcher


@dataclasses.dataclass(frozen=True)
class StatsdOptions:
    host: str = option(text, "localhost", "The statsd daemon's host.")
    port: int = option(port_number, 8125, "The statsd daemon's UDP port.")
    application_name: str = option(
        text, "app", "Second part of the bucket names (`circus.<application_name>.watcher`)."
    )
    sample_rate: float = option(
        number(), 1.0, "Share of the counts sent (each marked `@rate`), 0 < rate <= 1."
    )
    loop_rate: float = option(positive_number, 60.0, "FullStats: seconds between two reports.")

    def __post_init__(self) -> None:
        if not 0 < self.sample_rate <= 1:
            raise PluginOptionError(
                "sample_rate", f"expected 0 < rate <= 1, got {self.sample_rate:g}"
            )


_NOT_IN_BUCKETS = re.compile(r"[:|@\s/]")


def bucket_part(name: str) -> str:
    """A name as a bucket component: the statsd line separators become `_` (plugin:x)."""
    return _NOT_IN_BUCKETS.sub("_", name)


def gauge_text(value: float) -> str:
    """A gauge as statsd daemons read it: plain decimals (`12000000`, not `1.2e+07`, which
    statsd and many of its clones reject)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


class StatsdClient:
    """Fire-and-forget statsd lines over UDP (a lost datagram is a lost count, as statsd is)."""

    def __init__(
        self, host: str, port: int, prefix: str, sample_rate: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM
        )[0]
        self.address = address
        self.prefix = prefix
        self.sample_rate = sample_rate
        self._rng = rng or random.Random()
        self._socket = socket.socket(family, kind, proto)
        self._socket.setblocking(False)

    def send(self, bucket: str, value: str) -> None:
        with contextlib.suppress(OSError):  # full buffer, nobody listening: statsd is lossy
            self._socket.sendto(f"{self.prefix}.{bucket}:{value}".encode(), self.address)

    def increment(self, bucket: str, delta: int = 1) -> None:
        if self.sample_rate < 1:
            # Sampled as statsd clients do (Circus marked every count @rate and sent it).
            if self._rng.random() >= self.sample_rate:
                return
            self.send(bucket, f"{delta}|c|@{self.sample_rate:g}")
        else:
            self.send(bucket, f"{delta}|c")

    def gauge(self, bucket: str, value: float) -> None:
        self.send(bucket, f"{gauge_text(value)}|g")

    def close(self) -> None:
        self._socket.close()


class StatsdEmitter(Plugin):
    """Counts every watcher event: `<prefix>.<watcher>.<event>` += 1."""

    options_class = StatsdOptions

    def configure(self, options: Mapping[str, str]) -> None:
        self.settings, _unknown = parse_options(StatsdOptions, options)
        prefix = f"circus.{bucket_part(self.settings.application_name)}.watcher"
        try:
            self.statsd = StatsdClient(
                self.settings.host, self.settings.port, prefix, self.settings.sample_rate
            )
        except OSError as error:
            raise PluginOptionError("host", f"{self.settings.host}: {error}") from None

    async def handle_watcher_event(self, event: WatcherEvent) -> None:
        self.statsd.increment(f"{bucket_part(event.watcher)}.{bucket_part(event.kind)}")

    async def handle_stop(self) -> None:
        self.statsd.close()


class FullStats(StatsdEmitter):
    """Every `loop_rate` s, per watcher: number of processes, CPU and memory (max and sum)."""

    topics = ()  # as Circus's FullStats: figures only, no event counts

    async def handle_init(self) -> None:
        self.every(self.settings.loop_rate, self.look_after)

    async def look_after(self) -> None:
        reply = await self.call("stats")
        for name, processes in by_watcher(reply).items():
            if name.startswith(WATCHER_PREFIX):
                continue
            bucket = f"_stats.{bucket_part(name)}"
            self.statsd.gauge(f"{bucket}.watchers_num", len(processes))
            if not processes:
                continue
            cpus = [p.cpu for p in processes]
            percents = [p.mem_percent for p in processes]
            sizes = [p.rss for p in processes]
            self.statsd.gauge(f"{bucket}.cpu_max", max(cpus))
            self.statsd.gauge(f"{bucket}.cpu_sum", sum(cpus))
            self.statsd.gauge(f"{bucket}.mem_pct_max", max(percents))
            self.statsd.gauge(f"{bucket}.mem_pct_sum", sum(percents))
            self.statsd.gauge(f"{bucket}.mem_max", max(sizes))
            self.statsd.gauge(f"{bucket}.mem_sum", sum(sizes))
