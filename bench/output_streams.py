"""Child output throughput: circus-sd's stream path against supervisord, and its design variants.

    .venv/bin/python -m bench.output_streams [--lines N] [--reps R] [--variants ...]

Ten bench-child writers (100-byte numbered lines, 40 per write) start together and write
`--lines` lines each to stdout; the supervisor writes them into ONE shared file or into one file
per process. Reported: MB/s landed intact (first "go" to the last byte in the files), the
supervisor's CPU seconds per MB (all its threads), and lines torn, merged or missing (by
content). Variants of circus-sd are run in-process with one knob changed (see VARIANTS), so that
each design choice has a measurement behind it. Needs `make bench` to have built bench-child and
the peers' venv (for supervisord).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from bench.announce import Registry
from bench.logcheck import LINE_BYTES, check, wait_landed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, ".build", "bench", "bench-child")
PROJECT_PY = os.path.join(ROOT, ".venv", "bin", "python")
SUPERVISORD = os.path.join(ROOT, ".build", "bench-venv", "bin", "supervisord")
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
    "pipe-64k": "import circus_sd.output.router as r; r.PIPE_SIZE = 64 << 10",
    "no-gather": "import circus_sd.output.reader as r; r.GATHER_DELAY = 0.0",
    "gather-5ms": "import circus_sd.output.reader as r; r.GATHER_DELAY = 0.005",
}
if os.environ.get("OUTBENCH_PATCH"):  # a one-off experiment: a file of Python to run first
    with open(os.environ["OUTBENCH_PATCH"]) as _patch:
        VARIANTS["patched"] = _patch.read()


def circus_config(run_dir: str, sock: str, lines: int, mode: str, per_process: bool) -> str:
    out = os.path.join(run_dir, "out.$(circus.wid).log" if per_process else "out.log")
    return "\n".join([
        "[circus]",
        f"endpoint = ipc://{run_dir}/ctl.sock",
        f"pubsub_endpoint = ipc://{run_dir}/pub.sock",
        "[watcher:w]",
        f"cmd = {CHILD}",
        f"args = {shlex.join([sock, 'write', str(lines), mode])}",
        f"numprocesses = {WRITERS}",
        "stdout_stream.class = FileStream",
        f"stdout_stream.filename = {out}",
        "",
    ])


def supervisord_config(run_dir: str, sock: str, lines: int, mode: str, per_process: bool) -> str:
    out = (
        os.path.join(run_dir, "out.%(process_num)d.log")
        if per_process
        else os.path.join(run_dir, "out.log")
    )
    return "\n".join([
        "[unix_http_server]", f"file = {run_dir}/sup.sock",
        "[supervisord]", "nodaemon = true", f"logfile = {run_dir}/supervisord.log",
        f"pidfile = {run_dir}/supervisord.pid", f"childlogdir = {run_dir}",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "[program:w]",
        f"command = {shlex.join([CHILD, sock, 'write', str(lines), mode])}",
        "process_name = %(program_name)s_%(process_num)d",
        f"numprocs = {WRITERS}", "numprocs_start = 1", "autorestart = false",
        f"stdout_logfile = {out}", "stdout_logfile_maxbytes = 0", "stdout_logfile_backups = 0",
        "",
    ])


def one_run(
    variant: str, lines: int, mode: str, per_process: bool
) -> tuple[float, float, float, str]:
    """(MB/s landed intact, CPU s/MB of the supervisor, of which system, damage summary)."""
    run_dir = tempfile.mkdtemp(prefix="outbench-")
    sock = os.path.join(run_dir, "a.sock")
    files = (
        [os.path.join(run_dir, f"out.{i}.log") for i in range(1, WRITERS + 1)]
        if per_process
        else [os.path.join(run_dir, "out.log")]
    )
    try:
        with Registry(sock) as registry:
            if variant == "supervisord":
                config = os.path.join(run_dir, "supervisord.conf")
                with open(config, "w") as f:
                    f.write(supervisord_config(run_dir, sock, lines, mode, per_process))
                argv = [SUPERVISORD, "-n", "-c", config]
            else:
                config = os.path.join(run_dir, "circus.ini")
                with open(config, "w") as f:
                    f.write(circus_config(run_dir, sock, lines, mode, per_process))
                argv = [PROJECT_PY, "-c", _LAUNCH.format(patch=VARIANTS[variant]), config]
            with open(os.path.join(run_dir, "daemon.log"), "wb") as log:
                daemon = subprocess.Popen(argv, stdout=log, stderr=log, cwd=run_dir)
            try:
                if not registry.wait_alive(WRITERS, 30):
                    raise RuntimeError(f"{variant}: writers did not start")
                time.sleep(0.3)
                process = psutil.Process(daemon.pid)
                user0, system0 = process.cpu_times()[:2]
                t0 = time.monotonic()
                registry.go(registry.alive())
                if not registry.wait(lambda cs: sum(c.done is not None for c in cs) >= WRITERS,
                                     300):
                    raise RuntimeError(f"{variant}: writers did not finish")
                landed = max(
                    wait_landed(path, lines * LINE_BYTES * WRITERS // len(files), 1.0, 120)
                    for path in files
                )
                user1, system1 = process.cpu_times()[:2]
                cpu, system = user1 - user0 + system1 - system0, system1 - system0
            finally:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(20)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
        results = [check(path, lines * WRITERS // len(files)) for path in files]
        intact = sum(r.intact for r in results)
        torn = sum(r.torn for r in results)
        missing = sum(r.missing for r in results)
        mb = intact * LINE_BYTES / 1e6
        per_mb = (cpu / mb, system / mb) if mb else (0.0, 0.0)
        return mb / (landed - t0), *per_mb, f"torn {torn} missing {missing}"
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
    parser.add_argument("--variants", nargs="*", default=["circus-sd", "supervisord"])
    parser.add_argument("--layouts", nargs="*", default=["one-file", "file-per-process"])
    args = parser.parse_args()
    print(f"{WRITERS} writers x {args.lines} lines of {LINE_BYTES} B ({args.mode} writes), "
          f"median of {args.reps}")
    for layout in args.layouts:
        for variant in args.variants:
            figures: list[tuple[float, float, float, str]] = []
            for _ in range(args.reps):
                figures.append(one_run(variant, args.lines, args.mode, layout != "one-file"))
            mbps = statistics.median(f[0] for f in figures)
            cpu = statistics.median(f[1] for f in figures)
            system = statistics.median(f[2] for f in figures)
            damage = "; ".join(sorted({f[3] for f in figures}))
            print(f"  {layout:17} {variant:13} {mbps:8.0f} MB/s  {cpu * 1000:6.2f} ms CPU/MB "
                  f"({system * 1000:.2f} system)  "
                  f"[{damage}]  runs: " + " ".join(f"{f[0]:.0f}" for f in figures), flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
    sys.exit(0)
