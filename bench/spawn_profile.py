"""Where the time of a mass start goes: the arbiter in this process, N processes of one watcher.

Run with the project's venv (it imports circus_sd, not the peers):

    .venv/bin/python -m bench.spawn_profile [--n 500] [--cmd /bin/sleep --args 1000] [--profile]
    .venv/bin/python -m bench.spawn_profile --floor [--n 500]

Prints the wall time of `start` until N processes run, the CPU time of the arbiter, of the
spawner and of the children (their setup before exec included), the children's median page
faults (each page a child writes before its exec is a copy of the spawner's) and the spawner's
memory (each clone copies its page tables, each child's exec tears them down again). With
`--profile`, cProfile's view of the arbiter (its overhead inflates the arbiter's share).

`--floor`: the same N processes started by the fastest means at hand, for comparison: a loop
of os.posix_spawn here (vfork: nothing copied), and a loop of bare clone() + execve in a fresh
`python -IS` (what the spawner's clones cost with nothing of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import statistics
import subprocess
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


def _memory(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        anonymous = next(line.split()[1] for line in f if line.startswith("RssAnon:"))
    with open(f"/proc/{pid}/maps") as f:
        mappings = sum(1 for _ in f)
    return f"{int(anonymous) / 1024:.1f} MB anonymous, {mappings} mappings"


def _children_figures(pids: list[int]) -> str:
    cpu = sum(_schedstat_seconds(pid) for pid in pids)
    faults = statistics.median(_minor_faults(pid) for pid in pids)
    return f"children {cpu:.3f} s; page faults: {faults:.0f} in a child (median)"


# A bare `python -IS` cloning N children that exec at once: argv[1:] = n, program, args.
_CLONE_LOOP = """
import ctypes, gc, os, sys, time
n, argv = int(sys.argv[1]), [a.encode() for a in sys.argv[2:]]
libc = ctypes.PyDLL(None, use_errno=True)
args = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
env = (ctypes.c_char_p * 1)(None)
gc.freeze()
pids, wall, cpu = [], time.perf_counter(), time.process_time()
for _ in range(n):
    pid = libc.syscall(56, 17, 0, 0, 0, 0)
    if pid == 0:
        libc.execve(argv[0], args, env)
        os._exit(127)
    pids.append(pid)
print(time.perf_counter() - wall, time.process_time() - cpu, *pids)
sys.stdout.flush()
os.read(0, 1)
for pid in pids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""


def _floor(n: int, argv: list[str]) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    pids = [os.posix_spawn(argv[0], argv, {}) for _ in range(n)]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    time.sleep(0.3)  # the children finish starting their programs
    print(f"posix_spawn of {n}: {wall:.3f} s; CPU: parent {cpu:.3f} s, {_children_figures(pids)}")
    _end(pids)
    if os.uname().machine != "x86_64":
        return  # the loop's clone() syscall number is x86_64's
    loop = subprocess.Popen(
        [sys.executable, "-IS", "-c", _CLONE_LOOP, str(n), *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert loop.stdout is not None and loop.stdin is not None
    wall_text, cpu_text, *pid_texts = loop.stdout.readline().split()
    pids = [int(pid) for pid in pid_texts]
    time.sleep(0.3)
    print(
        f"clone loop of {n} in python -IS ({_memory(loop.pid)}): {float(wall_text):.3f} s; "
        f"CPU: parent {float(cpu_text):.3f} s, {_children_figures(pids)}"
    )
    loop.stdin.close()  # the loop ends its children
    loop.wait()


def _end(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, 9)
    for pid in pids:
        os.waitpid(pid, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--cmd", default="/bin/sleep")
    parser.add_argument("--args", default="1000")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--floor", action="store_true")
    options = parser.parse_args(argv)
    if options.floor:
        _floor(options.n, [options.cmd, *options.args.split()])
        return 0
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
        spawner_faults_before = _minor_faults(spawner_pid)
        if profile:
            profiler.enable()
        wall, cpu = time.perf_counter(), time.process_time()
        await arbiter.start_watcher("w")
        while len(watcher.pids) < n:
            await asyncio.sleep(0.001)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        profiler.disable()
        spawner_cpu = _schedstat_seconds(spawner_pid) - spawner_before
        spawner_faults = (_minor_faults(spawner_pid) - spawner_faults_before) / n
        await asyncio.sleep(0.3)  # the children finish starting their programs
        print(
            f"{n} processes of {config.watchers[0].cmd}: {wall:.3f} s; CPU: arbiter {cpu:.3f} s, "
            f"spawner {spawner_cpu:.3f} s, {_children_figures(list(watcher.pids))}, "
            f"{spawner_faults:.0f} in the spawner per child; spawner: {_memory(spawner_pid)}"
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
