"""The prometheus plugin: a Prometheus exporter of the watchers, on a local HTTP address.

Each scrape of `/metrics` asks the arbiter (`status`, `stats --extended`) and answers with
fresh figures; nothing is polled between scrapes. Served from the plugin's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from circus_sd.client import CallError
from circus_sd.config.options import option, text
from circus_sd.config.plugin_options import PluginOptionError, parse_options, port_number
from circus_sd.plugins.base import CommandFailed, Plugin, WatcherStatus
from circus_sd.plugins.stats_reply import ProcessFigures, by_watcher
from circus_sd.states import WatcherState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

REQUEST_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class PrometheusOptions:
    host: str = option(
        text, "127.0.0.1", "Address to serve on (a non-loopback one exposes the figures)."
    )
    port: int = option(port_number, 9157, "TCP port of `http://HOST:PORT/metrics`.")


def metric_families(
    statuses: Mapping[str, WatcherStatus],
    processes: Mapping[str, list[ProcessFigures]],
    up: bool,
) -> list[Metric]:
    """The exposition, from what the arbiter answered (pure: tested without a server)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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
    cpu = GaugeMetricFamily(
        "circus_watcher_cpu_percent",
        "CPU of the watcher's processes and their descendants, % of one core, since the "
        "previous scrape.",
        labels=["watcher"],
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
            cpu.add_metric([name], sum(p.tree_cpu for p in figures))
            memory.add_metric([name], sum(p.tree_rss for p in figures))
    return [arbiter_up, count, target, restarts, state, flapping, cpu, memory]


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

    async def exposition(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        try:
            statuses = await self.statuses()
            processes = by_watcher(await self.call("stats", extended=True))
            up = True
        except (CommandFailed, CallError) as error:
            self.log.warning("scrape: the arbiter did not answer: %s", error)
            statuses, processes, up = {}, {}, False
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(metric_families(statuses, processes, up)))
        return generate_latest(registry)

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
        from prometheus_client import CONTENT_TYPE_LATEST

        request = (await reader.readline()).decode("latin-1").split()
        while (await reader.readline()).strip():
            pass  # headers: nothing in them changes the answer
        if len(request) < 2:
            return "400 Bad Request", b"bad request\n", "text/plain"
        method, path = request[0], request[1].partition("?")[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
        if path != "/metrics":
            return "404 Not Found", b"the metrics are at /metrics\n", "text/plain"
        body = await self.exposition()
        return "200 OK", b"" if method == "HEAD" else body, CONTENT_TYPE_LATEST
