"""The journald sinks: a private journald in a mount namespace, circus-sd's JournalStream into it.

There is no journald on a bench machine whose PID 1 is not systemd, and the machine's own one
must not be flooded anyway. So each run starts `systemd-journald` itself, with `unshare --mount
--net --propagation private` (the network namespace only for its datagram queue length, see
DGRAM_QLEN): a tmpfs over /run (journald's sockets, its drop-in under
/run/systemd/journald.conf.d/ and the volatile journal under /run/log/journal) and one over
/var/log/journal, so nothing it writes reaches the machine's real directories and everything
vanishes with the namespace. Its drop-in (JOURNALD_CONF) keeps the journal in memory
(Storage=volatile), turns its rate limit off (RateLimitIntervalSec=0, RateLimitBurst=0: the
figures are journald's throughput, not its limit) and stops every forwarding and kernel/audit
input. journald says READY=1 on a NOTIFY_SOCKET of ours (no polling for its sockets).

circus-sd's arbiter is started in the same namespace (`nsenter --mount`), so the standard paths
/run/systemd/journal/{socket,stdout} are this journald's. Two sinks: `JournalStream` (the arbiter
sends one native-protocol entry per line from its writer thread) and `JournalStream` with
`direct = true` (each child's stdout is connected to journald's stream socket; the arbiter never
sees the output). The workload is the log benchmark's: 10 bench-child writers, 100-byte numbered
lines, batched or one write() per line. The harness reads the journal from outside through
/proc/JOURNALD_PID/root: entries are counted from the journal files' headers (to know when the
last one landed), their messages are checked with `journalctl -D ... -o cat` and logcheck.

    .build/bench-venv/bin/python -m bench.journal_sink [--lines N] [--reps R]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import select
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from bench.logcheck import LogCheck, check, wait_settled
from bench.procs import cpu_seconds, reap_orphans
from bench.supervisors import WATCHER, CircusLike, Workload
from bench.workloads import BenchError, DaemonRun

JOURNALD = "/lib/systemd/systemd-journald"
# The native socket's queue of datagrams (per network namespace, taken when journald creates the
# socket): systemd's sysctl.d/50-default.conf sets 512 on systemd machines, the kernel's default
# is 10, which would make the arbiter's writer block every 10 entries.
DGRAM_QLEN = int(os.environ.get("BENCH_JOURNAL_QLEN", "512"))
SINKS = ("native", "direct")
IDENTIFIER = WATCHER  # JournalStream's SYSLOG_IDENTIFIER: the watcher's name

JOURNALD_CONF = """\
[Journal]
Storage=volatile
RateLimitIntervalSec=0
RateLimitBurst=0
RuntimeMaxUse={max_use}M
RuntimeKeepFree=0
RuntimeMaxFileSize={max_use}M
ReadKMsg=no
Audit=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
"""

# Run by `unshare --mount --propagation private`: the mounts are the namespace's alone. `exec`,
# so that the pid unshare was started as is journald's.
_NAMESPACE_SETUP = """\
set -e
echo {qlen} > /proc/sys/net/unix/max_dgram_qlen
mount -t tmpfs -o size={size}m,mode=755 circus-sd-bench /run
if [ -d /var/log/journal ]; then
    mount -t tmpfs -o size=1m,mode=755 circus-sd-bench /var/log/journal
fi
mkdir -p /run/systemd/journal /run/systemd/journald.conf.d /run/log/journal
printf '%s' {conf} > /run/systemd/journald.conf.d/circus-sd-bench.conf
exec {journald}
"""

# The journal file header (systemd's journal-def.h): n_entries is a little-endian u64 here.
_N_ENTRIES_OFFSET = 152
_DROPPED = re.compile(rb": dropped (\d+) line\(s\) \((\d+) bytes\)")


def unavailable() -> str | None:
    """Why the journald sinks cannot be measured here, or None."""
    if os.geteuid() != 0:
        return "needs root (mount namespace)"
    for tool in ("unshare", "nsenter", "journalctl"):
        if shutil.which(tool) is None:
            return f"no {tool}"
    if not os.access(JOURNALD, os.X_OK):
        return f"no {JOURNALD}"
    probe = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "true"],
                           capture_output=True, text=True, timeout=10, check=False)
    if probe.returncode != 0:
        return f"unshare --mount failed: {probe.stderr.strip()[-200:]}"
    return None


class PrivateJournald:
    """A systemd-journald in a mount namespace of its own; stopped (by pid) on exit."""

    def __init__(self, base_dir: str, size_mb: int = 2048, dgram_qlen: int = DGRAM_QLEN,
                 ready_timeout: float = 10.0) -> None:
        self.dir = tempfile.mkdtemp(prefix="jd-", dir=base_dir)
        self.log_path = os.path.join(self.dir, "journald.log")
        notify_path = os.path.join(self.dir, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            notify.bind(notify_path)
            script = _NAMESPACE_SETUP.format(
                qlen=dgram_qlen,
                size=size_mb,
                conf=shlex.quote(JOURNALD_CONF.format(max_use=size_mb * 9 // 10)),
                journald=JOURNALD,
            )
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET": notify_path}
            with open(self.log_path, "wb") as log:
                self.popen = subprocess.Popen(
                    ["unshare", "--mount", "--net", "--propagation", "private", "--", "sh", "-c",
                     script],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True,
                )
            self.pid = self.popen.pid
            self._wait_ready(notify, ready_timeout)
        except BaseException:
            notify.close()
            self.close()
            raise
        # Later notifications (stream fds journald would like to store) fail and are ignored.
        notify.close()
        os.unlink(notify_path)
        self.root = f"/proc/{self.pid}/root"
        with open("/etc/machine-id") as f:
            self.journal_dir = f"{self.root}/run/log/journal/{f.read().strip()}"

    def _wait_ready(self, notify: socket.socket, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([notify], [], [], max(left, 0))
            if not ready:
                raise BenchError(f"journald not ready after {timeout:.0f} s:\n{self.tail()}")
            if b"READY=1" in notify.recv(4096).split(b"\n"):
                return

    def __enter__(self) -> PrivateJournald:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def enter(self) -> list[str]:
        """The command prefix that runs a program in this journald's mount namespace."""
        return ["nsenter", f"--mount=/proc/{self.pid}/ns/mnt", "--"]

    def entries(self) -> int:
        """Entries in the journal files (all of them: journald's own messages too)."""
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.journal_dir):
                if name.endswith(".journal"):
                    with contextlib.suppress(OSError), open(
                        os.path.join(self.journal_dir, name), "rb"
                    ) as f:
                        f.seek(_N_ENTRIES_OFFSET)
                        total += struct.unpack("<Q", f.read(8))[0]
        return total

    def wait_landed(self, expected: int, quiet: float, timeout: float) -> float:
        """Poll the entry count until it reaches `expected` or stops growing for `quiet`
        seconds; the time.monotonic() of the last growth seen."""
        return wait_settled(self.entries, expected, quiet, timeout)

    def messages(self, identifier: str, path: str) -> None:
        """The MESSAGE of every entry from `identifier`, one per line, into `path`."""
        with open(path, "wb") as out:
            done = subprocess.run(
                ["journalctl", "-D", self.journal_dir, "-o", "cat", "-t", identifier,
                 "--no-pager"],
                stdout=out, stderr=subprocess.PIPE, timeout=300, check=False,
            )
        if done.returncode != 0:
            raise BenchError(f"journalctl failed: {done.stderr.decode()[-300:]}")

    def cpu_seconds(self) -> float:
        return cpu_seconds([self.pid])

    def tail(self, lines: int = 10) -> str:
        with contextlib.suppress(OSError), open(self.log_path, "rb") as f:
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        return ""

    def close(self) -> None:
        """SIGTERM journald (its pid), SIGKILL after 5 s; the namespace and its tmpfs go with it."""
        popen = getattr(self, "popen", None)
        if popen is not None and popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGTERM)
            try:
                popen.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(popen.pid, signal.SIGKILL)
                popen.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class JournalSinkSupervisor:
    """circus-sd run inside a PrivateJournald's namespace, its watcher's stdout to JournalStream."""

    circus_sd: CircusLike
    enter: tuple[str, ...]
    direct: bool

    @property
    def name(self) -> str:
        return self.circus_sd.name

    def write_config(self, run_dir: str, workload: Workload) -> str:
        path = os.path.join(run_dir, "circus.ini")
        lines = [
            "[circus]",
            f"endpoint = ipc://{run_dir}/ctl.sock",
            f"pubsub_endpoint = ipc://{run_dir}/pub.sock",
            "",
            f"[watcher:{WATCHER}]",
            f"cmd = {workload.argv[0]}",
            f"args = {shlex.join(workload.argv[1:])}",
            f"numprocesses = {workload.numprocesses}",
            "stdout_stream.class = JournalStream",
            f"stdout_stream.direct = {str(self.direct).lower()}",
        ]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def command(self, config: str) -> list[str]:
        return [*self.enter, *self.circus_sd.command(config)]

    def control(self, run_dir: str, timeout: float = 5.0):  # type: ignore[no-untyped-def]
        return self.circus_sd.control(run_dir, timeout)

    def control_address(self, run_dir: str) -> tuple[str, str]:
        return self.circus_sd.control_address(run_dir)

    def cli_status(self, run_dir: str, config: str) -> list[str]:
        return self.circus_sd.cli_status(run_dir, config)


@dataclasses.dataclass(frozen=True)
class JournalFigures:
    mb_per_s: float  # landed intact, from "go" to the last entry
    lines_per_s: float
    arbiter_cpu_s_per_mb: float  # the arbiter and its spawner helper
    journald_cpu_s_per_mb: float
    journald_busy: float  # journald's CPU seconds per second of the run: 1.0 = a whole core
    dropped_lines: int | None  # as circus-sd reports them (None: direct, nothing to count)
    check: LogCheck


def dropped_lines(daemon_log: str) -> int:
    """Lines circus-sd says it dropped: its log lines sum up every drop (the last ones at stop)."""
    with open(daemon_log, "rb") as f:
        return sum(int(m.group(1)) for m in _DROPPED.finditer(f.read()))


def measure(circus_sd: CircusLike, child: str, base_dir: str, sink: str, mode: str,
            writers: int, lines: int, timeout: float) -> JournalFigures:
    """One run: a fresh journald, circus-sd with `writers` writers into `sink` (native/direct)."""
    expected = writers * lines
    with PrivateJournald(base_dir) as journald:
        supervisor = JournalSinkSupervisor(circus_sd, tuple(journald.enter), sink == "direct")

        def workload(sock: str) -> Workload:
            return Workload((child, sock, "write", str(lines), mode), writers, True)

        with DaemonRun(supervisor, base_dir, workload, child) as run:
            try:
                if not run.registry.wait_alive(writers, timeout):
                    run.check_alive()
                    raise BenchError(f"journald {sink}: log writers did not start")
                time.sleep(0.3)
                pids = list(run.own_pids().values())
                before = journald.entries()
                c0, j0 = cpu_seconds(pids), journald.cpu_seconds()
                t0 = time.monotonic()
                run.registry.go(run.registry.alive())
                if not run.registry.wait(lambda cs: all(c.done for c in cs), timeout):
                    raise BenchError(f"journald {sink}: log writers did not finish")
                landed = journald.wait_landed(before + expected, 1.0, timeout)
                cpu, journald_cpu = cpu_seconds(pids) - c0, journald.cpu_seconds() - j0
                if journald.popen.poll() is not None:
                    raise BenchError(f"journald exited during the run:\n{journald.tail()}")
                run.stop(timeout=30)  # drop counts are logged at stop
                dropped = None if sink == "direct" else dropped_lines(run.d.log_path)
                messages = os.path.join(journald.dir, "messages.txt")
                journald.messages(IDENTIFIER, messages)
                result = check(messages, expected)
            finally:
                # Before the run's cleanup, which would SIGKILL it as a stray descendant.
                journald.close()
    mb = result.intact_bytes / 1e6
    elapsed = landed - t0
    return JournalFigures(
        mb / elapsed,
        result.intact / elapsed,
        # cpu_seconds() misses threads that ended in the window: never below 0 (direct: ~0).
        max(cpu, 0.0) / mb if mb else 0.0,
        journald_cpu / mb if mb else 0.0,
        journald_cpu / elapsed,
        dropped,
        result,
    )


def main() -> None:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000, help="lines per writer")
    parser.add_argument("--writers", type=int, default=10)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--sinks", nargs="*", default=list(SINKS), choices=SINKS)
    parser.add_argument("--modes", nargs="*", default=["batch", "line"], choices=("batch", "line"))
    parser.add_argument("--child", default=os.path.join(here, ".build", "bench", "bench-child"))
    parser.add_argument("--project-venv", default=os.path.join(here, ".venv"))
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        print(f"journald sinks skipped: {reason}")
        return
    venv = os.path.abspath(args.project_venv)
    circus_sd = CircusLike("circus-sd", [os.path.join(venv, "bin", "circus-sd")],
                           os.path.join(venv, "bin", "circusctl"))
    base = tempfile.mkdtemp(prefix="csj-", dir="/tmp")
    try:
        for sink in args.sinks:
            for mode in args.modes:
                runs = [measure(circus_sd, os.path.abspath(args.child), base, sink, mode,
                                args.writers, args.lines, 120) for _ in range(args.reps)]
                med = statistics.median
                print(f"{sink:6} {mode:5} {med(r.mb_per_s for r in runs):7.2f} MB/s "
                      f"{med(r.lines_per_s for r in runs):9,.0f} lines/s  arbiter "
                      f"{med(r.arbiter_cpu_s_per_mb for r in runs) * 1000:7.2f} ms/MB  journald "
                      f"{med(r.journald_cpu_s_per_mb for r in runs) * 1000:7.2f} ms/MB "
                      f"(busy {med(r.journald_busy for r in runs):.0%})  "
                      "dropped " + ",".join(str(r.dropped_lines) for r in runs) + "  missing "
                      + ",".join(str(r.check.missing) for r in runs) + "  torn "
                      + ",".join(str(r.check.torn) for r in runs), flush=True)
    finally:
        reap_orphans()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
    sys.exit(0)
