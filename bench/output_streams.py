"""Child output throughput: circus-sd's stream path against supervisord, and its design variants.

    .venv/bin/python -m bench.output_streams [--lines N] [--reps R] [--variants ...]

Ten writers (100-byte numbered lines; bench-child: 40 per write, `--writer python`: 80 per
write, 8,000 bytes, or one per line with `--mode line`) start together and write `--lines` lines
each to stdout; the supervisor writes them into ONE shared file, or each of ten watchers (one
process each) into its own file. `--variants circus-sd circus-sd@/tmp/old supervisord` compares
the code against an old copy of the tree (A/B), runs interleaved. Reported: MB/s landed intact
(first "go" to the last byte in the files), the
supervisor's CPU seconds per MB (all its threads), and lines torn, merged or missing (by
content). Variants of circus-sd are run in-process with one knob changed (see VARIANTS), so that
each design choice has a measurement behind it. Needs `make bench` to have built bench-child and
the peers' venv (for supervisord).

`--user nobody` (the harness itself run by root) runs every supervisor, and so its writers, as
that user: what a daemon not run by root meets (the kernel's 64 KiB pipes unless it may grow
them, its pipes counted against `fs.pipe-user-pages-soft`). The user must be able to run the
venvs' interpreter; where it lives under a 0700 /root (pyenv), run the harness as

    unshare --mount --propagation private -- sh -c 'mkdir -p /tmp/pyenv-bind &&
      mount --bind /root/.pyenv /tmp/pyenv-bind && mount -t tmpfs -o mode=755 tmpfs /root &&
      mkdir /root/.pyenv && mount --bind /tmp/pyenv-bind /root/.pyenv &&
      exec .venv/bin/python -m bench.output_streams --user nobody ...'

(a private mount namespace: /root is opened to other users in it alone).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from bench.announce import Registry
from bench.logcheck import LINE_BYTES, check, merged, wait_landed
from bench.procs import cpu_seconds
from bench.supervisors import CircusLike, Supervisord, Workload

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, ".build", "bench", "bench-child")
PROJECT_PY = os.path.join(ROOT, ".venv", "bin", "python")
PY_WRITER = os.path.join(ROOT, "bench", "py_writer.py")
PY_BATCH_LINES = 80  # 8,000 bytes per write: more than PIPE_BUF (issue 18)
SUPERVISORD = Supervisord("supervisord", os.path.join(ROOT, ".build", "bench-venv", "bin"))
CIRCUS_SD = CircusLike("circus-sd", [], "")  # only its INI is used: started through _LAUNCH
WRITERS = 10

# circus-sd started through this launcher, with one module attribute patched per variant.
_LAUNCH = """
import sys
{patch}
from circus_sd.cli import main
sys.exit(main([sys.argv[1]]))
"""

_INLINE_SINK = """
import circus_sd.output.router as router
from circus_sd.output.sink import Chunk

class InlineSink:
    # Writes in the loop thread, at once: the alternative to a writer thread per sink.
    def __init__(self, writer, loop, limit, on_report):
        self.writer, self.description = writer, writer.description
        self.closed = self.full = False
    def put(self, parts, size, origin):
        self.writer.write([Chunk(parts, size, origin)])
        return True
    def when_room(self, key, callback): pass
    def forget(self, key): pass
    def close(self):
        self.closed = True
        self.writer.close()
    async def wait_closed(self, timeout): return True

router.Sink = InlineSink
"""

VARIANTS: dict[str, str] = {
    "circus-sd": "",
    "inline-write": _INLINE_SINK,
    "read-64k": "import circus_sd.output.reader as r; r.READ_SIZE = 64 << 10",
    "read-1m": "import circus_sd.output.reader as r; r.READ_SIZE = 1 << 20",
    # Pipes at most this big (pipe-64k: the kernel's default, never grown; before 2026-12-03,
    # what an arbiter not run by root had).
    "pipe-64k": "import circus_sd.output.pipe_sizes as p; p.PIPE_MAX = 64 << 10",
    "pipe-256k": "import circus_sd.output.pipe_sizes as p; p.PIPE_MAX = 256 << 10",
    "no-gather": "import circus_sd.output.reader as r; r.GATHER_DELAY = 0.0",
    "gather-5ms": "import circus_sd.output.reader as r; r.GATHER_DELAY = 0.005",
    # Each read handed to the writer thread at once, not once per turn of the loop.
    "hand-over-each": "import circus_sd.output.sink as s; s.HAND_OVER_BYTES = 0",
    "hand-over-128k": "import circus_sd.output.sink as s; s.HAND_OVER_BYTES = 128 << 10",
    "hand-over-256k": "import circus_sd.output.sink as s; s.HAND_OVER_BYTES = 256 << 10",
    "hand-over-1m": "import circus_sd.output.sink as s; s.HAND_OVER_BYTES = 1 << 20",
    "hand-over-2ms": "import circus_sd.output.sink as s; s.HAND_OVER_DELAY = 0.002",
    "hand-over-5ms": "import circus_sd.output.sink as s; s.HAND_OVER_DELAY = 0.005",
    "hand-over-turn": "import circus_sd.output.sink as s; s.HAND_OVER_DELAY = 0.0",
}
if os.environ.get("OUTBENCH_PATCH"):  # a one-off experiment: a file of Python to run first
    with open(os.environ["OUTBENCH_PATCH"]) as _patch:
        VARIANTS["patched"] = _patch.read()


def _workload(run_dir: str, sock: str, lines: int, mode: str, layout: str,
              writer: str) -> Workload:
    """One watcher of WRITERS processes into one file, or WRITERS watchers of one, a file each."""
    if writer == "python":
        per_write = "1" if mode == "line" else str(PY_BATCH_LINES)
        argv: tuple[str, ...] = (sys.executable, PY_WRITER, sock, str(lines), per_write)
    else:
        argv = (CHILD, sock, "write", str(lines), mode)
    if layout == "one-file":
        return Workload(argv, WRITERS, True, os.path.join(run_dir, "out.log"))
    return Workload(argv, 1, True, os.path.join(run_dir, "out.{watcher}.log"), WRITERS)


def _faults_and_switches(pid: int) -> tuple[int, int]:
    """Minor page faults and context switches (both kinds) of all the process's threads."""
    with open(f"/proc/{pid}/stat") as f:
        faults = int(f.read().rpartition(")")[2].split()[7])
    switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
    return faults, switches


def _as_user(user: str | None, run_dir: str, env: dict[str, str]) -> pwd.struct_passwd | None:
    """Make the run directory and environment `user`'s (None: the harness's own)."""
    if user is None:
        return None
    entry = pwd.getpwnam(user)
    os.chown(run_dir, entry.pw_uid, entry.pw_gid)
    # Its runtime directory (circus-sd's /tmp/circus-sd-UID otherwise) private to this run.
    env.update(HOME=run_dir, USER=user, LOGNAME=user, XDG_RUNTIME_DIR=run_dir)
    return entry


def one_run(
    variant: str, lines: int, mode: str, layout: str, writer: str, user: str | None = None
) -> tuple[float, float, float, str]:
    """(MB/s landed intact, CPU s/MB of the supervisor, of which system, damage and cost
    summary: page faults and context switches per MB)."""
    run_dir = tempfile.mkdtemp(prefix="outbench-")
    sock = os.path.join(run_dir, "a.sock")
    workload = _workload(run_dir, sock, lines, mode, layout, writer)
    files = workload.stdout_files()
    env = dict(os.environ)
    as_user = _as_user(user, run_dir, env)
    try:
        with Registry(sock) as registry:
            os.chmod(sock, 0o777)  # the writers may run as another user (--user)
            if variant == "supervisord":
                config = SUPERVISORD.write_config(run_dir, workload)
                argv = SUPERVISORD.command(config)
            else:
                config = CIRCUS_SD.write_config(run_dir, workload)
                name, _, tree = variant.partition("@")
                if tree:  # another copy of the code (A/B): circus_sd imported from there
                    env["PYTHONPATH"] = os.path.abspath(tree)
                patch = "\n".join(VARIANTS[part] for part in name.split("+"))  # a+b: both
                argv = [PROJECT_PY, "-c", _LAUNCH.format(patch=patch), config]
            if as_user:  # what the config made (supervisord's childlogs) is the user's
                for top, dirs, names in os.walk(run_dir):
                    for name in dirs + names:
                        os.chown(os.path.join(top, name), as_user.pw_uid, as_user.pw_gid)
            with open(os.path.join(run_dir, "daemon.log"), "wb") as log:
                daemon = subprocess.Popen(
                    argv, stdout=log, stderr=log, cwd=run_dir, env=env,
                    user=as_user.pw_uid if as_user else None,
                    group=as_user.pw_gid if as_user else None,
                    extra_groups=[] if as_user else None,
                )
            try:
                if not registry.wait_alive(WRITERS, 30):
                    raise RuntimeError(f"{variant}: writers did not start")
                time.sleep(0.3)
                process = psutil.Process(daemon.pid)
                system0 = process.cpu_times()[1]
                cpu0 = cpu_seconds([daemon.pid])
                faults0, switches0 = _faults_and_switches(daemon.pid)
                t0 = time.monotonic()
                registry.go(registry.alive())
                if not registry.wait(lambda cs: sum(c.done is not None for c in cs) >= WRITERS,
                                     300):
                    raise RuntimeError(f"{variant}: writers did not finish")
                landed = max(
                    wait_landed(path, lines * LINE_BYTES * WRITERS // len(files), 1.0, 120)
                    for path in files
                )
                cpu = cpu_seconds([daemon.pid]) - cpu0
                faults1, switches1 = _faults_and_switches(daemon.pid)
                system = process.cpu_times()[1] - system0
            finally:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(20)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
        result = merged([check(path, lines * WRITERS // len(files)) for path in files])
        mb = result.intact_bytes / 1e6
        per_mb = (cpu / mb, system / mb) if mb else (0.0, 0.0)
        costs = (f"{(faults1 - faults0) / mb:.0f} faults/MB "
                 f"{(switches1 - switches0) / mb:.0f} switches/MB") if mb else ""
        return (mb / (landed - t0), *per_mb,
                f"torn {result.torn} missing {result.missing}|{costs}")
    finally:
        if os.environ.get("OUTBENCH_KEEP_LOG"):
            with contextlib.suppress(OSError):
                shutil.copy(os.path.join(run_dir, "daemon.log"), os.environ["OUTBENCH_KEEP_LOG"])
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000, help="lines per writer")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--mode", default="batch", choices=("batch", "line"))
    parser.add_argument("--writer", default="c", choices=("c", "python"),
                        help=f"bench-child (40 lines per write) or bench/py_writer.py "
                        f"({PY_BATCH_LINES} lines per write)")
    parser.add_argument("--variants", nargs="*", default=["circus-sd", "supervisord"],
                        help="VARIANT or VARIANT@TREE (circus_sd imported from TREE: A/B)")
    parser.add_argument("--layouts", nargs="*", default=["one-file", "file-per-process"])
    parser.add_argument("--user", help="run the supervisors (and writers) as this user (see above)")
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"{WRITERS} {args.writer} writers x {args.lines} lines of {LINE_BYTES} B "
          f"({args.mode} writes), median of {args.reps}, variants interleaved, "
          f"as {args.user or pwd.getpwuid(os.geteuid()).pw_name}; load {load}")
    for layout in args.layouts:
        figures: dict[str, list[tuple[float, float, float, str]]] = {v: [] for v in args.variants}
        for rep in range(args.reps):  # interleaved: a busy moment of the machine hits all alike
            # Rotated: the first run of a round measured ~10 % more CPU/MB (the same code, twice).
            shift = rep % len(args.variants)
            for variant in args.variants[shift:] + args.variants[:shift]:
                figures[variant].append(
                    one_run(variant, args.lines, args.mode, layout, args.writer, args.user)
                )
        for variant, runs in figures.items():
            mbps = statistics.median(f[0] for f in runs)
            cpu = statistics.median(f[1] for f in runs)
            system = statistics.median(f[2] for f in runs)
            damage = "; ".join(sorted({f[3].partition("|")[0] for f in runs}))
            costs = " ".join(f[3].partition("|")[2] for f in runs[:1])
            print(f"  {layout:17} {variant:24} {mbps:6.0f} MB/s  {cpu * 1000:6.2f} ms CPU/MB "
                  f"({system * 1000:.2f} system)  [{damage}]  runs: "
                  + " ".join(f"{f[0]:.0f}/{f[1] * 1000:.2f}" for f in runs)
                  + f"  (first run: {costs})", flush=True)
    with open("/proc/loadavg") as f:
        print(f"load at the end: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
    sys.exit(0)
