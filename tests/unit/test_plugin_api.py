"""The plugin API and the shipped plugins' pure parts: events, names, the runner's command line,
timers, load signals (on fake /proc and cgroup trees, and one real listening socket), the
watchdog's table, the Prometheus exposition and statsd lines."""

from __future__ import annotations

import asyncio
import json
import shlex
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from circus_sd import __version__
from circus_sd.config.model import ArbiterConfig
from circus_sd.config.plugin_catalog import NoCounterpart, resolve
from circus_sd.config.plugin_watchers import OPTIONS_ENV, plugin_watcher
from circus_sd.plugins import Plugin, WatcherEvent, WatcherStatus
from circus_sd.plugins import __main__ as runner
from circus_sd.plugins.load_signals import (
    AcceptQueue,
    CgroupCpu,
    CgroupFinder,
    CgroupPressure,
    SocketAddress,
    parse_pressure,
    parse_proc_net_tcp,
)
from circus_sd.plugins.prometheus import CpuSeconds, metric_families
from circus_sd.plugins.stats_reply import ProcessFigures, by_watcher
from circus_sd.plugins.statsd import StatsdClient, bucket_part, gauge_text
from circus_sd.plugins.watchdog import HeartbeatTable

# -- events and names ------------------------------------------------------------------------------


def test_watcher_events_are_typed() -> None:
    event = WatcherEvent.from_topic(
        "watcher.web.v2.reap", {"process_pid": 12, "exit_code": -9, "time": 1.5}
    )
    assert event is not None
    assert (event.watcher, event.kind, event.pid, event.exit_code, event.time) == (
        "web.v2", "reap", 12, -9, 1.5,
    )
    start = WatcherEvent.from_topic("watcher.web.start", {"time": 2})
    assert start is not None and (start.pid, start.exit_code) == (None, None)
    assert WatcherEvent.from_topic("plugin.scale.grow", {}) is None
    assert WatcherEvent.from_topic("watcher.web", {}) is None


def test_use_names() -> None:
    assert resolve("autoscale") == "circus_sd.plugins.autoscale.Autoscale"
    assert resolve(" circus.plugins.watchdog.WatchDog ") == "circus_sd.plugins.watchdog.WatchDog"
    assert resolve("circus.plugins.statsd.FullStats") == "circus_sd.plugins.statsd.FullStats"
    assert resolve("mypkg.plugins.Mine") == "mypkg.plugins.Mine"
    with pytest.raises(NoCounterpart):
        resolve("circus.plugins.redis_observer.RedisObserver")
    with pytest.raises(ValueError, match="dotted path"):
        resolve("Mine")


# -- the runner's command line ---------------------------------------------------------------------


class Ticker(Plugin):
    """Counts its timer's ticks, stops itself after three."""

    topics = ()

    def configure(self, options: Mapping[str, str]) -> None:
        self.period = float(options.get("period", "0.01"))
        self.ticks: list[float] = []
        self.stopped = False

    async def handle_init(self) -> None:
        self.every(self.period, self.tick, first=0.0)

    def tick(self) -> None:
        self.ticks.append(asyncio.get_running_loop().time())
        if len(self.ticks) == 2:
            raise RuntimeError("a failing tick is logged; the timer goes on")
        if len(self.ticks) == 3:
            self.stop()

    async def handle_stop(self) -> None:
        self.stopped = True


def test_the_watcher_command_line_is_what_the_runner_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arbiter = ArbiterConfig(endpoint="ipc:///tmp/a b/c.sock", pubsub_endpoint="ipc:///tmp/e.sock")
    watcher = plugin_watcher("tick", f"{__name__}.Ticker", {"period": "0.02"}, arbiter)
    argv = shlex.split(watcher.cmd) + shlex.split(watcher.args)
    assert argv[:4] == [sys.executable, "-m", "circus_sd.plugins", "tick"]
    monkeypatch.setenv(OPTIONS_ENV, watcher.env[OPTIONS_ENV])
    args = runner.parse_args([*argv[3:], "--option", "Extra=1"])
    plugin = runner.create(args)
    assert isinstance(plugin, Ticker)
    assert (plugin.name, plugin.period) == ("tick", 0.02)
    assert plugin.endpoint == "ipc:///tmp/a b/c.sock"
    assert plugin.pubsub_endpoint == "ipc:///tmp/e.sock"
    assert plugin.options == {"period": "0.02", "extra": "1"}


def test_runner_refuses_what_is_not_a_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OPTIONS_ENV, raising=False)
    assert runner.main(["x", "--use", "json.JSONDecoder"]) == runner.EX_CONFIG
    assert runner.main(["x", "--use", "no_such_module.Thing"]) == runner.EX_CONFIG
    assert runner.main(["x", "--use", "autoscale", "--option", "max=0"]) == runner.EX_CONFIG


def test_timers_run_in_order_survive_errors_and_stop_cleanly() -> None:
    plugin = Ticker("tick", {"period": "0.01"})
    assert asyncio.run(asyncio.wait_for(plugin.run(), 5.0)) == 0
    assert len(plugin.ticks) == 3 and plugin.stopped
    assert plugin.ticks == sorted(plugin.ticks)


# -- load signals ----------------------------------------------------------------------------------

PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000080:00000005 00:00000000 00000000     0        0 1 1
   1: 00000000:0050 00000000:0000 0A 00001000:00000002 00:00000000 00000000     0        0 2 1
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1
"""


def test_proc_net_tcp_listeners_and_their_queues() -> None:
    listeners = parse_proc_net_tcp(PROC_NET_TCP)
    assert [(str(x.address), x.port, x.queued, x.backlog) for x in listeners] == [
        ("127.0.0.1", 8080, 5, 128),
        ("0.0.0.0", 80, 2, 4096),
    ]
    loopback = SocketAddress.parse("127.0.0.1:8080")
    assert loopback.matches(listeners[0]) and not loopback.matches(listeners[1])
    assert SocketAddress.parse("[::1]:80").matches(listeners[1])  # a wildcard listener
    assert SocketAddress.parse("localhost:80") == SocketAddress("127.0.0.1", 80)
    with pytest.raises(ValueError):
        SocketAddress.parse("web")


def test_accept_queue_of_a_real_listening_socket(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        port = server.getsockname()[1]
        signal = AcceptQueue(SocketAddress.parse(f"127.0.0.1:{port}"))
        assert signal.measure([], 0.0) == 0.0
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        try:
            assert signal.measure([], 0.0) == 3.0  # connected, none accepted yet
            accepted, _ = server.accept()
            accepted.close()
            assert signal.measure([], 0.0) == 2.0
        finally:
            for client in clients:
                client.close()
    assert AcceptQueue(SocketAddress(None, 9), proc=tmp_path).measure([], 0.0) is None


def fake_cgroups(tmp_path: Path, pids: dict[int, str]) -> CgroupFinder:
    """/proc/PID/cgroup files naming each pid's cgroup v2 path, and a cgroup mount."""
    for pid, path in pids.items():
        (tmp_path / "proc" / str(pid)).mkdir(parents=True)
        (tmp_path / "proc" / str(pid) / "cgroup").write_text(f"1:name=systemd:/\n0::{path}\n")
    return CgroupFinder(proc=tmp_path / "proc", mount=tmp_path / "cg")


def test_the_watcher_cgroup_is_the_parent_of_its_process_leaves(tmp_path: Path) -> None:
    finder = fake_cgroups(tmp_path, {
        10: "/svc/watcher-web/wid-1-1", 11: "/svc/watcher-web/wid-2-4",
        20: "/svc/arbiter", 30: "/svc/watcher-db/wid-1-1",
    })
    assert finder.watcher_cgroup([10, 11]) == tmp_path / "cg" / "svc" / "watcher-web"
    assert finder.watcher_cgroup([20]) is None  # not in a per-watcher leaf
    assert finder.watcher_cgroup([10, 30]) is None  # two watchers
    assert finder.watcher_cgroup([99]) is None  # gone
    assert finder.watcher_cgroup([]) is None


def test_cgroup_cpu_usage_and_pressure(tmp_path: Path) -> None:
    finder = fake_cgroups(tmp_path, {10: "/watcher-web/wid-1-1", 11: "/watcher-web/wid-2-2"})
    cgroup = tmp_path / "cg" / "watcher-web"
    cgroup.mkdir(parents=True)
    usage = CgroupCpu(finder)
    (cgroup / "cpu.stat").write_text("usage_usec 1000000\nuser_usec 900000\n")
    assert usage.measure([10, 11], 100.0) is None  # the first measure is the baseline
    (cgroup / "cpu.stat").write_text("usage_usec 4000000\nuser_usec 3000000\n")
    # 3 s of CPU in 2 s for 2 processes: 75 % of a core each.
    assert usage.measure([10, 11], 102.0) == pytest.approx(75.0)
    (cgroup / "cpu.pressure").write_text(
        "some avg10=12.50 avg60=3.00 avg300=1.00 total=123\n"
        "full avg10=1.00 avg60=0.00 avg300=0.00 total=4\n"
    )
    assert CgroupPressure(finder).measure([10], 0.0) == 12.5
    assert CgroupPressure(finder).measure([99], 0.0) is None
    assert parse_pressure("full avg10=1.0\n") is None


# -- the watchdog's table --------------------------------------------------------------------------


def test_heartbeats_keep_processes_alive_silence_names_them() -> None:
    table = HeartbeatTable()
    table.add("web", 10, now=0.0)
    table.add("web", 11, now=0.0)
    assert table.beat(10, 50.0) and not table.beat(99, 50.0)
    silent = table.silent(now=61.0, limit=60.0)
    assert [(pid, w.watcher, silence) for pid, w, silence in silent] == [(11, "web", 61.0)]
    table.remove(11)
    assert table.silent(now=111.0, limit=60.0)[0][0] == 10


# -- exporters -------------------------------------------------------------------------------------

STATS_REPLY = {
    "status": "ok",
    "infos": {
        "web": {
            "101": {"pid": 101, "cpu": 12.5, "mem": 1.5, "rss": 10_000_000, "mem_info1": "9.5M",
                    "wid": 1, "create_time": 1700000000.5, "cpu_seconds": 4.0,
                    "children": [{"pid": 102, "cpu": 2.5, "mem": 0.5, "mem_info1": "2.0M",
                                  "cpu_seconds": 1.5, "children": []}]},
            "103": "No such process (stopped?)",
        },
        "idle": {},
    },
}


def test_stats_replies_are_read_with_exact_or_rounded_sizes() -> None:
    figures = by_watcher(STATS_REPLY)
    (web,) = figures["web"]
    child = ProcessFigures(102, 2.5, 0.5, 2 << 20, cpu_seconds=1.5)
    assert web == ProcessFigures(
        101, 12.5, 1.5, 10_000_000, (child,), cpu_seconds=4.0, wid=1, started=1700000000.5
    )
    assert (web.tree_rss, web.tree_cpu) == (10_000_000 + (2 << 20), 15.0)
    assert figures["idle"] == []


def test_prometheus_exposition_parses_back() -> None:
    statuses = {
        "web": WatcherStatus("web", "active", (101,), 2, 3, None),
        "bad": WatcherStatus("bad", "paused", (), 1, 7, "flapping: paused 7 s (pause 1 of 5)"),
    }
    registry = CollectorRegistry(auto_describe=False)

    class Collector:
        def collect(self):  # type: ignore[no-untyped-def]
            figures = by_watcher(STATS_REPLY)
            return metric_families(statuses, figures, True, CpuSeconds().update(figures))

    registry.register(Collector())  # type: ignore[arg-type]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    assert samples[("circus_up", ())] == 1
    assert samples[("circus_watcher_processes", (("watcher", "web"),))] == 1
    assert samples[("circus_watcher_processes_target", (("watcher", "web"),))] == 2
    assert samples[("circus_watcher_restarts_total", (("watcher", "bad"),))] == 7
    assert samples[("circus_watcher_state", (("state", "paused"), ("watcher", "bad")))] == 1
    assert samples[("circus_watcher_state", (("state", "active"), ("watcher", "bad")))] == 0
    assert samples[("circus_watcher_flapping", (("watcher", "bad"),))] == 1
    assert samples[("circus_watcher_flapping", (("watcher", "web"),))] == 0
    assert samples[("circus_watcher_cpu_seconds_total", (("watcher", "web"),))] == 5.5
    assert samples[("circus_process_start_time_seconds", (("watcher", "web"), ("wid", "1")))] == (
        1700000000.5
    )
    assert samples[("circus_sd_build_info", (("version", __version__),))] == 1
    assert samples[("circus_watcher_memory_bytes", (("watcher", "web"),))] == 10_000_000 + (2 << 20)


def test_cpu_seconds_only_grow_as_processes_come_and_go() -> None:
    def process(pid: int, seconds: float, started: float = 1.0) -> ProcessFigures:
        return ProcessFigures(pid, 0.0, 0.0, 0, cpu_seconds=seconds, started=started)

    counter = CpuSeconds()
    assert counter.update({"web": [process(1, 2.0), process(2, 3.0)]}) == {"web": 5.0}
    # pid 2 exited (its 3 s stay counted); pid 1 used 1 s more.
    assert counter.update({"web": [process(1, 3.0)]}) == {"web": 6.0}
    # pid 2 again, but a new process (another start time): counted from its own 0.5 s.
    assert counter.update({"web": [process(1, 3.0), process(2, 0.5, 9.0)]}) == {"web": 6.5}
    # A watcher removed and added again starts from what its processes used.
    assert counter.update({}) == {}
    assert counter.update({"web": [process(3, 1.0)]}) == {"web": 1.0}


def test_statsd_gauges_are_plain_decimals() -> None:
    assert gauge_text(12_000_000) == "12000000"
    assert gauge_text(12.5) == "12.5"
    assert gauge_text(1e-7) == "0"
    assert gauge_text(0.1 + 0.2) == "0.3"
    assert gauge_text(3 * 1024.0**3) == "3221225472"


def test_statsd_lines() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        client = StatsdClient("127.0.0.1", server.getsockname()[1], "circus.app.watcher")
        try:
            client.increment(f"{bucket_part('plugin:x')}.spawn")
            client.gauge("_stats.web.cpu_sum", 12.5)
            assert server.recv(100) == b"circus.app.watcher.plugin_x.spawn:1|c"
            assert server.recv(100) == b"circus.app.watcher._stats.web.cpu_sum:12.5|g"
        finally:
            client.close()


def test_watcher_status_from_details() -> None:
    details = json.loads('{"state": "active", "pids": [3, 4], "numprocesses": 2, "restarts": 1,'
                         ' "reason": null, "started": 1.0}')
    assert WatcherStatus.from_details("web", details) == WatcherStatus(
        "web", "active", (3, 4), 2, 1, None
    )
