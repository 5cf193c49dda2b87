"""Plugins with the real daemon: supervised plugin processes, autoscale under a real CPU load,
the Prometheus exporter against what really runs, resource_watcher against a memory hog.

Loopback only: the statsd datagrams go to a UDP socket the test bound on 127.0.0.1 (port 0), the
exporter listens on a bind-tested free loopback port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import psutil
import pytest
from arbiter_harness import (
    Arbiter,
    Circus,
    alive,
    child_command,
    read_lines,
    report_command,
    stays_equal,
    wait_until,
)
from control_helpers import (
    Clients,
    ControlClient,
    clients,
    control_endpoint,
    events_endpoint,
    loopback_port,
    real_pids,
    wait_count,
)
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def zmq_clients() -> Iterator[Clients]:
    yield from clients()


def plugin_pid(control: ControlClient, name: str) -> int | None:
    """The pid of plugin `name`'s process, once its watcher has one that exec'd the runner."""
    pids = control.ok("list", name=f"plugin:{name}")["pids"]
    for pid in pids:
        try:
            if "circus_sd.plugins" in psutil.Process(pid).cmdline():
                return int(pid)
        except psutil.Error:
            continue
    return None


def wait_plugin(control: ControlClient, name: str, not_pid: int | None = None) -> int:
    def running() -> int | None:
        pid = plugin_pid(control, name)
        return pid if pid is not None and pid != not_pid else None

    return wait_until(running, 10.0, f"the process of plugin {name}")


def up(circus: Circus, zmq_clients: Clients, text: str) -> tuple[Arbiter, ControlClient]:
    arbiter = circus.start(circus.write_config(text))
    return arbiter, zmq_clients.control(control_endpoint(circus.tmp))


# -- a plugin is a supervised process --------------------------------------------------------------


def test_plugin_runs_as_a_supervised_watcher_and_counts_events_to_statsd(
    circus: Circus, zmq_clients: Clients
) -> None:
    statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    statsd.bind(("127.0.0.1", 0))
    statsd.settimeout(0.2)
    port = statsd.getsockname()[1]
    try:
        text = f"""
            [watcher:web]
            cmd = {report_command(circus.tmp, "web")}

            [plugin:stats]
            use = circus.plugins.statsd.StatsdEmitter
            host = 127.0.0.1
            port = {port}
            application_name = it
            """
        arbiter, control = up(circus, zmq_clients, text)
        first = wait_plugin(control, "stats")
        status = control.ok("status", name="plugin:stats", details=True)
        assert status["status"] == "active"
        assert status["details"]["plugin:stats"]["numprocesses"] == 1

        def counted(bucket: str) -> bool:
            # The plugin's subscription may not be live at once (ZMQ): make events until seen.
            control.ok("incr", name="web", waiting=True)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    data = statsd.recv(4096).decode()
                except TimeoutError:
                    continue
                if data == bucket:
                    return True
            return False

        wait_until(
            lambda: counted("circus.it.watcher.web.spawn:1|c"), 15.0, "a statsd spawn count",
            arbiter.log_tail,
        )

        # Killed, it is restarted like any process of any watcher.
        os.kill(first, signal.SIGKILL)
        second = wait_plugin(control, "stats", not_pid=first)
        assert not alive(first)
        assert second != first
        wait_until(
            lambda: counted("circus.it.watcher.web.spawn:1|c"), 15.0,
            "a statsd count from the restarted plugin", arbiter.log_tail,
        )

        # A changed plugin section restarts the plugin alone, with its new options.
        web = sorted(control.ok("list", name="web")["pids"])
        circus.write_config(text.replace("application_name = it", "application_name = it2"))
        control.ok("reloadconfig", waiting=True)
        third = wait_plugin(control, "stats", not_pid=second)
        assert not alive(second) and third != second
        wait_until(
            lambda: counted("circus.it2.watcher.web.spawn:1|c"), 15.0,
            "a statsd count with the new application_name", arbiter.log_tail,
        )
        assert set(web) <= set(control.ok("list", name="web")["pids"])
    finally:
        statsd.close()


# -- autoscale -------------------------------------------------------------------------------------

GROW_DEADLINE = 20.0
SHRINK_DEADLINE = 20.0


def test_autoscale_grows_under_cpu_load_to_max_and_shrinks_back_when_it_stops(
    circus: Circus, zmq_clients: Clients
) -> None:
    flag = circus.tmp / "burn"
    command = child_command("load.py", circus.tmp, "burn", "--burn-while", str(flag))
    arbiter, control = up(circus, zmq_clients, f"""
        [watcher:burn]
        cmd = {command}
        numprocesses = 1

        [plugin:scale]
        use = autoscale
        watcher = burn
        min = 1
        max = 3
        grow_above = 20
        shrink_below = 5
        cooldown = 1
        loop_rate = 0.5
        """)
    events = zmq_clients.events(events_endpoint(circus.tmp))
    wait_count(arbiter, "burn", 1)
    mark = events.sync(control, "burn")
    wait_plugin(control, "scale")
    # Idle at min: nothing to do.
    stays_equal(lambda: len(real_pids(arbiter, "burn")), 1.5, "the idle watcher's processes")

    flag.touch()
    started = time.monotonic()
    wait_count(arbiter, "burn", 3, timeout=GROW_DEADLINE)
    grew_in = time.monotonic() - started
    grows = [
        events.wait("plugin.scale.grow", lambda p, n=n: p["to"] == n, 5.0, mark) for n in (2, 3)
    ]
    assert [(g["watcher"], g["from"], g["to"], g["signal"]) for g in grows] == [
        ("burn", 1, 2, "cpu"), ("burn", 2, 3, "cpu"),
    ]
    assert all(g["load"] > 20 for g in grows), grows
    # At max it stays there, load or not.
    stays_equal(lambda: len(real_pids(arbiter, "burn")), 2.0, "the processes at max")

    mark = len(events.seen)
    flag.unlink()
    started = time.monotonic()
    wait_count(arbiter, "burn", 1, timeout=SHRINK_DEADLINE)
    shrank_in = time.monotonic() - started
    shrinks = [
        events.wait("plugin.scale.shrink", lambda p, n=n: p["to"] == n, 5.0, mark) for n in (2, 1)
    ]
    assert [(s["from"], s["to"]) for s in shrinks] == [(3, 2), (2, 1)]
    assert all(s["load"] < 5 for s in shrinks), shrinks
    assert control.ok("status", name="burn", details=True)["details"]["burn"]["numprocesses"] == 1
    print(f"autoscale: 1 -> 3 in {grew_in:.1f} s, 3 -> 1 in {shrank_in:.1f} s")


def test_the_first_spawns_after_a_plugin_starts_are_counted(
    circus: Circus, zmq_clients: Clients
) -> None:
    """The plugin starts first (its priority) and says it is ready once its subscription
    receives: the watchers started after it have each of their first spawns counted."""
    statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    statsd.bind(("127.0.0.1", 0))
    statsd.settimeout(0.2)
    try:
        arbiter, control = up(circus, zmq_clients, f"""
            [watcher:web]
            cmd = {report_command(circus.tmp, "web")}
            numprocesses = 3

            [plugin:stats]
            use = circus.plugins.statsd.StatsdEmitter
            host = 127.0.0.1
            port = {statsd.getsockname()[1]}
            application_name = first
            """)
        wait_count(arbiter, "web", 3)
        spawns = 0

        def three_counted() -> bool:
            nonlocal spawns
            with contextlib.suppress(TimeoutError):
                if statsd.recv(4096) == b"circus.first.watcher.web.spawn:1|c":
                    spawns += 1
            return spawns == 3

        wait_until(three_counted, 10.0, "3 statsd spawn counts", lambda: f"{spawns} counted")
        assert control.ok("list", name="web")["pids"]
    finally:
        statsd.close()


# -- prometheus ------------------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    """Every sample of the exporter as {(name, labels): value}; None if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"].startswith("text/plain")
            text = answer.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_prometheus_exporter_matches_what_runs(circus: Circus, zmq_clients: Clients) -> None:
    port = loopback_port()
    arbiter, control = up(circus, zmq_clients, f"""
        [watcher:web]
        cmd = {report_command(circus.tmp, "web")}
        numprocesses = 3
        min_uptime = 0.1

        [watcher:idle]
        cmd = {report_command(circus.tmp, "idle")}
        autostart = false

        [plugin:metrics]
        use = prometheus
        port = {port}
        """)
    pids = wait_count(arbiter, "web", 3)
    samples = wait_until(lambda: scrape(port), 15.0, "the exporter to answer", arbiter.log_tail)
    assert value(samples, "circus_up") == 1
    assert value(samples, "circus_watcher_processes", watcher="web") == 3
    assert value(samples, "circus_watcher_processes_target", watcher="web") == 3
    assert value(samples, "circus_watcher_restarts_total", watcher="web") == 0
    assert value(samples, "circus_watcher_state", watcher="web", state="active") == 1
    assert value(samples, "circus_watcher_state", watcher="web", state="stopped") == 0
    assert value(samples, "circus_watcher_state", watcher="idle", state="stopped") == 1
    assert value(samples, "circus_watcher_processes", watcher="idle") == 0
    assert value(samples, "circus_watcher_flapping", watcher="web") == 0
    assert value(samples, "circus_watcher_processes", watcher="plugin:metrics") == 1
    # Memory: what the kernel says of these processes, give or take their own changes.
    resident = sum(psutil.Process(pid).memory_info().rss for pid in pids)
    exported = value(samples, "circus_watcher_memory_bytes", watcher="web")
    assert abs(exported - resident) <= 0.2 * resident, (exported, resident)
    assert value(samples, "circus_watcher_cpu_seconds_total", watcher="web") >= 0
    for pid in pids:
        started = psutil.Process(pid).create_time()
        assert any(
            abs(value(samples, "circus_process_start_time_seconds", watcher="web", wid=wid)
                - started) < 0.05 for wid in ("1", "2", "3")
        ), pid
    # OpenMetrics when the scraper asks for it, parsed by prometheus-client's own parser.
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
        families = {f.name: f for f in openmetrics_families(answer.read().decode())}
    assert families["circus_watcher_cpu_seconds"].type == "counter"
    assert families["circus_sd_build"].type == "info"

    os.kill(pids[0], signal.SIGKILL)
    wait_until(lambda: pids[0] not in real_pids(arbiter, "web"), 5.0, "the killed process's end")
    wait_count(arbiter, "web", 3)

    def restarted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        now = scrape(port)
        if now is None or value(now, "circus_watcher_restarts_total", watcher="web") != 1:
            return None
        return now if value(now, "circus_watcher_processes", watcher="web") == 3 else None

    samples = wait_until(restarted, 10.0, "the exporter to count the restart", arbiter.log_tail)
    details = control.ok("status", name="web", details=True)["details"]["web"]
    assert details["restarts"] == 1 and len(details["pids"]) == 3

    control.ok("start", name="idle", waiting=True)
    samples = wait_until(
        lambda: (now := scrape(port)) and value(now, "circus_watcher_processes", watcher="idle")
        == 1 and now, 10.0, "the exporter to see idle started",
    )
    assert value(samples, "circus_watcher_state", watcher="idle", state="active") == 1

    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5).close()
    caught.value.close()
    assert caught.value.code == 404


# -- resource_watcher ------------------------------------------------------------------------------


def test_resource_watcher_restarts_the_process_over_max_mem_only(
    circus: Circus, zmq_clients: Clients
) -> None:
    command = child_command("load.py", circus.tmp, "hog", "--hog-wid", "1", "--hog-mib", "96")
    arbiter, control = up(circus, zmq_clients, f"""
        [watcher:hog]
        cmd = {command}
        numprocesses = 2

        [plugin:limits]
        use = circus.plugins.resource_watcher.ResourceWatcher
        watcher = hog
        max_mem = 48M
        max_cpu = 0
        health_threshold = 0
        loop_rate = 0.5
        max_count = 1
        """)
    events = zmq_clients.events(events_endpoint(circus.tmp))
    wait_count(arbiter, "hog", 2)
    mark = events.sync(control, "hog")
    starts = circus.tmp / "hog.starts"

    def started(wid: str) -> list[int]:
        return [int(line.split()[2]) for line in read_lines(starts) if line.split()[1] == wid]

    first_hog = wait_until(lambda: started("1"), 5.0, "the hog's start")[0]
    lean = wait_until(lambda: started("2"), 5.0, "the lean process's start")
    wait_until(lambda: len(started("1")) >= 2, 15.0, "the hog's restart", arbiter.log_tail)
    # `kill` starts the replacement at once, while the old process stops.
    wait_until(lambda: not alive(first_hog), 5.0, "the hog's end")
    restart = events.wait("plugin.limits.restart", lambda p: p["pid"] == first_hog, 5.0, mark)
    assert restart["watcher"] == "hog"
    assert any("memory" in reason and "> 48M" in reason for reason in restart["reasons"]), restart
    # The lean process is never touched.
    assert started("2") == lean and alive(lean[0])
    assert f"restarting process {first_hog}" in arbiter.log()
    # Counted in the watcher's restarts, as an exit's would be (status --details, exporter);
    # the hog may be restarted again meanwhile (it goes over max_mem each time).
    restarts = control.ok("status", name="hog", details=True)["details"]["hog"]["restarts"]
    assert 1 <= restarts <= len(started("1"))


# -- the publish command ---------------------------------------------------------------------------


def test_publish_puts_events_under_plugin_only(circus: Circus, zmq_clients: Clients) -> None:
    arbiter, control = up(circus, zmq_clients, f"""
        [watcher:web]
        cmd = {report_command(circus.tmp, "web")}
        """)
    events = zmq_clients.events(events_endpoint(circus.tmp))
    wait_count(arbiter, "web", 1)
    mark = events.sync(control, "web")
    assert control.ok("publish", name="scale", event="grow", data={"to": 3})["status"] == "ok"
    payload = events.wait("plugin.scale.grow", start=mark)
    assert payload["to"] == 3 and isinstance(payload["time"], float)
    assert "event" in control.error("publish", 3, name="scale", event="web.spawn")
    assert "name" in control.error("publish", 3, name="a b", event="grow")
    assert "data" in control.error("publish", 3, name="scale", event="grow", data=[1])
    assert "missing property 'event'" in control.error("publish", 3, name="scale")


# -- watchdog --------------------------------------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_watchdog_kills_the_silent_process_and_spares_the_beating_one(
    circus: Circus, zmq_clients: Clients
) -> None:
    port = free_udp_port()
    arbiter, control = up(circus, zmq_clients, f"""
        [watcher:beats]
        cmd = {child_command("heartbeat.py", circus.tmp, "beats", str(port))}

        [watcher:silent]
        cmd = {report_command(circus.tmp, "silent")}

        [plugin:dog]
        use = circus.plugins.watchdog.WatchDog
        port = {port}
        loop_rate = 0.3
        max_count = 3
        watchers_regex = ^(beats|silent)$
        """)
    events = zmq_clients.events(events_endpoint(circus.tmp))
    (beating,) = wait_count(arbiter, "beats", 1)
    (silent,) = wait_count(arbiter, "silent", 1)
    mark = events.sync(control, "silent")
    wait_plugin(control, "dog")
    killed = events.wait("plugin.dog.kill", lambda p: p["pid"] == silent, 10.0, mark)
    assert killed["watcher"] == "silent" and killed["silent_for"] > 0.9
    reaped = events.wait("watcher.silent.reap", lambda p: p["process_pid"] == silent, 5.0, mark)
    assert reaped["exit_code"] == -signal.SIGKILL
    assert alive(beating) and real_pids(arbiter, "beats") == [beating]
    assert not any(p["pid"] == beating for t, p in events.seen if t == "plugin.dog.kill")
