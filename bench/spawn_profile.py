"""Where the time of a mass start goes: the arbiter in this process, N processes of one watcher.

Run with the project's venv (it imports circus_sd, not the peers):

    .venv/bin/python -m bench.spawn_profile [--n 500] [--cmd /bin/sleep --args 1000] [--profile]

Prints the wall time of `start` until N processes run, the CPU time of the arbiter, of the
spawner and of the children (their setup before exec included), and the children's median
page faults (each page a child writes before its exec is a copy of the spawner's). With
`--profile`, cProfile's view of the arbiter (its overhead inflates the arbiter's share).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time


def _schedstat_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except OSError:
        return 0.0


def _minor_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--cmd", default="/bin/sleep")
    parser.add_argument("--args", default="1000")
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="spawn-profile-") as tmp:
        config_path = os.path.join(tmp, "circus.ini")
        with open(config_path, "w") as f:
            f.write(
                f"[circus]\nendpoint = ipc://{tmp}/ctl.sock\npubsub_endpoint = ipc://{tmp}/pub.sock\n"
                f"\n[watcher:w]\ncmd = {options.cmd}\nargs = {options.args}\n"
                f"numprocesses = {options.n}\nautostart = false\n"
            )
        return _run(config_path, options.n, options.profile)


def _run(config_path: str, n: int, profile: bool) -> int:
    # As circus_sd/cli.py does: the spawner first, then the arbiter's own set-up.
    from circus_sd.config.loader import load_config
    from circus_sd.spawner import fork_spawner

    config, _warnings = load_config(config_path)
    spawner_pid, spawner_socket = fork_spawner()

    from circus_sd.arbiter import Arbiter, Request
    from circus_sd.cli import _raise_nofile_limit
    from circus_sd.config.process_env import ChildDefaults
    from circus_sd.control.server import ControlServer
    from circus_sd.process import become_subreaper
    from circus_sd.spawner import Spawner

    logging.basicConfig(level=logging.WARNING)
    defaults = ChildDefaults.capture()
    _raise_nofile_limit()
    become_subreaper()
    arbiter = Arbiter(
        config, Spawner(spawner_pid, spawner_socket), loader=load_config, defaults=defaults
    )

    async def scenario() -> None:
        server = ControlServer(arbiter, config.arbiter)
        server.bind()
        serving = asyncio.create_task(server.serve())
        running = asyncio.create_task(arbiter.run())
        await asyncio.sleep(0.3)  # the spawner's interpreter is up
        watcher = arbiter.watchers["w"]
        profiler = cProfile.Profile()
        spawner_before = _schedstat_seconds(spawner_pid)
        spawner_faults = _minor_faults(spawner_pid)
        if profile:
            profiler.enable()
        wall, cpu = time.perf_counter(), time.process_time()
        await arbiter.start_watcher("w")
        while len(watcher.pids) < n:
            await asyncio.sleep(0.001)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        profiler.disable()
        spawner_cpu = _schedstat_seconds(spawner_pid) - spawner_before
        spawner_faults = (_minor_faults(spawner_pid) - spawner_faults) / n
        await asyncio.sleep(0.3)  # the children finish starting their programs
        children_cpu = sum(_schedstat_seconds(pid) for pid in watcher.pids)
        faults = statistics.median(_minor_faults(pid) for pid in watcher.pids)
        print(
            f"{n} processes of {config.watchers[0].cmd}: {wall:.3f} s; CPU: arbiter {cpu:.3f} s, "
            f"spawner {spawner_cpu:.3f} s, children {children_cpu:.3f} s; "
            f"page faults: {faults:.0f} in a child (median), {spawner_faults:.0f} in the "
            "spawner per child"
        )
        arbiter.request(Request.STOP)
        await running
        serving.cancel()
        await server.close()
        if profile:
            stats = pstats.Stats(profiler, stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(25)

    asyncio.run(scenario())
    return 0


if __name__ == "__main__":
    sys.exit(main())
