"""The prometheus plugin: a Prometheus exporter of the watchers, on a local HTTP address.

Each scrape of `/metrics` asks the arbiter (`status`, `stats --extended`) and answers with
fresh figures; nothing is polled between scrapes. Served from the plugin's event loop, in the
text format or OpenMetrics, as the scraper's Accept header asks (prometheus-client's encoders).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from circus_sd import __version__
from circus_sd.client import CallError
from circus_sd.config.options import option, text
from circus_sd.config.plugin_options import PluginOptionError, parse_options, port_number
from circus_sd.plugins.base import CommandFailed, Plugin, WatcherStatus
from circus_sd.plugins.stats_reply import ProcessFigures, by_watcher
from circus_sd.states import WatcherState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

REQUEST_TIMEOUT = 10.0
# A scrape sends a handful of headers; a client sending more is not a scraper.
MAX_HEADERS = 100


@dataclasses.dataclass(frozen=True)
class PrometheusOptions:
    host: str = option(
        text, "127.0.0.1", "Address to serve on (a non-loopback one exposes the figures)."
    )
    port: int = option(port_number, 9157, "TCP port of `http://HOST:PORT/metrics`.")


class CpuSeconds:
    """Per watcher, the CPU seconds its processes and their descendants have used, as a counter
    that only grows: the last figure seen of each process gone since, plus what the live ones
    used so far. (A sum of the live processes alone would drop at every exit.)"""

    def __init__(self) -> None:
        self._gone: dict[str, float] = collections.defaultdict(float)
        # By watcher: (pid, start time) -> CPU seconds at the last scrape.
        self._live: dict[str, dict[tuple[int, float], float]] = {}

    def update(self, processes: Mapping[str, list[ProcessFigures]]) -> dict[str, float]:
        totals = {}
        for name, figures in processes.items():
            now = {(p.pid, p.started): p.cpu_seconds for f in figures for p in f.tree()}
            for key, seconds in self._live.get(name, {}).items():
                if key not in now:
                    self._gone[name] += seconds
            self._live[name] = now
            totals[name] = self._gone[name] + sum(now.values())
        for name in set(self._live) - set(processes):  # a watcher removed
            del self._live[name]
            self._gone.pop(name, None)
        return totals


def metric_families(
    statuses: Mapping[str, WatcherStatus],
    processes: Mapping[str, list[ProcessFigures]],
    up: bool,
    cpu_seconds: Mapping[str, float] | None = None,
) -> list[Metric]:
    """The exposition, from what the arbiter answered (pure: tested without a server).
    `cpu_seconds`: CpuSeconds.update's totals (the exporter keeps them between scrapes)."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        InfoMetricFamily,
    )

    build = InfoMetricFamily("circus_sd_build", "The exporter's circus-sd version.")
    build.add_metric([], {"version": __version__})
    arbiter_up = GaugeMetricFamily("circus_up", "1 if the arbiter answered this scrape.")
    arbiter_up.add_metric([], 1.0 if up else 0.0)
    count = GaugeMetricFamily(
        "circus_watcher_processes", "Live processes of the watcher.", labels=["watcher"]
    )
    target = GaugeMetricFamily(
        "circus_watcher_processes_target",
        "Processes the watcher should have (numprocesses).",
        labels=["watcher"],
    )
    restarts = CounterMetricFamily(
        "circus_watcher_restarts",
        "Restarts of the watcher's processes after unexpected exits, since the arbiter started.",
        labels=["watcher"],
    )
    state = GaugeMetricFamily(
        "circus_watcher_state", "1 for the watcher's current state.", labels=["watcher", "state"]
    )
    flapping = GaugeMetricFamily(
        "circus_watcher_flapping",
        "1 if the watcher is paused or given up for flapping.",
        labels=["watcher"],
    )
    cpu = CounterMetricFamily(
        "circus_watcher_cpu_seconds",
        "CPU time used by the watcher's processes and their descendants since the exporter "
        "started watching them (user and system).",
        labels=["watcher"],
    )
    started = GaugeMetricFamily(
        "circus_process_start_time_seconds",
        "Start time of each process of the watcher, by worker id, since the Unix epoch.",
        labels=["watcher", "wid"],
    )
    memory = GaugeMetricFamily(
        "circus_watcher_memory_bytes",
        "Resident memory of the watcher's processes and their descendants.",
        labels=["watcher"],
    )
    for name, status in sorted(statuses.items()):
        count.add_metric([name], len(status.pids))
        target.add_metric([name], status.numprocesses)
        restarts.add_metric([name], status.restarts)
        for known in WatcherState:
            state.add_metric([name, known.value], 1.0 if status.state == known.value else 0.0)
        is_flapping = (status.reason or "").startswith("flapping") and status.state in (
            WatcherState.PAUSED.value,
            WatcherState.FAILED.value,
        )
        flapping.add_metric([name], 1.0 if is_flapping else 0.0)
        figures = processes.get(name)
        if figures is not None:
            memory.add_metric([name], sum(p.tree_rss for p in figures))
            for process in figures:
                if process.wid is not None and process.started:
                    started.add_metric([name, str(process.wid)], process.started)
        if cpu_seconds is not None and name in cpu_seconds:
            cpu.add_metric([name], cpu_seconds[name])
    return [build, arbiter_up, count, target, restarts, state, flapping, cpu, memory, started]


class _Families:
    """A collector that yields metrics computed beforehand (one per scrape)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


class PrometheusExporter(Plugin):
    options_class = PrometheusOptions
    topics = ()

    def configure(self, options: Mapping[str, str]) -> None:
        self.settings, _unknown = parse_options(PrometheusOptions, options)
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise PluginOptionError(
                None, "the exporter needs prometheus-client (Debian: python3-prometheus-client)"
            ) from None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._cpu = CpuSeconds()

    async def handle_init(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.settings.host, self.settings.port
        )
        self.log.info("metrics on http://%s:%d/metrics", self.settings.host, self.settings.port)

    async def handle_stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics encoded as `accept` asks (an HTTP Accept header), and its content type."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        try:
            statuses = await self.statuses()
            processes = by_watcher(await self.call("stats", extended=True))
            up = True
        except (CommandFailed, CallError) as error:
            self.log.warning("scrape: the arbiter did not answer: %s", error)
            statuses, processes, up = {}, {}, False
        cpu = self._cpu.update(processes) if up else None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(metric_families(statuses, processes, up, cpu)))
        encode, content_type = choose_encoder(accept)
        return encode(registry), content_type

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            status, body, content_type = await asyncio.wait_for(
                self._answer(reader), REQUEST_TIMEOUT
            )
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (TimeoutError, ConnectionError, ValueError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, bytes, str]:
        request = (await reader.readline()).decode("latin-1").split()
        accept = ""
        for _header in range(MAX_HEADERS):
            line = (await reader.readline()).decode("latin-1")
            if not line.strip():
                break
            name, _, header_value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = header_value.strip()
        else:
            return "431 Request Header Fields Too Large", b"too many headers\n", "text/plain"
        if len(request) < 2:
            return "400 Bad Request", b"bad request\n", "text/plain"
        method, path = request[0], request[1].partition("?")[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
        if path != "/metrics":
            return "404 Not Found", b"the metrics are at /metrics\n", "text/plain"
        body, content_type = await self.exposition(accept)
        return "200 OK", b"" if method == "HEAD" else body, content_type
