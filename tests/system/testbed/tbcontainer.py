"""Boot a throwaway systemd (PID 1) container from Python, for pytest fixtures.

Adapted from shared/testbed/container/tbcontainer.py (its run-nspawn.sh explains each safety
measure). The container stays up while many commands run in it:

    with SystemdContainer(binds=[("/path/on/host", "/opt/x", True)]) as ct:
        ct.run("systemctl", "start", "foo")              # CompletedProcess (text)
        ct.show("foo.service", "ActiveState")            # -> "active"
        ct.journal("_SYSTEMD_UNIT=foo.service")          # -> list of dicts (journalctl -o json)

Commands run as transient units inside (systemd-run --pipe --wait), so they get a real
cgroup, environment and journal attribution; run(..., unit=False) uses plain nsenter.
Needs root, unshare/nsenter (util-linux) and systemd-nspawn (common/get-nspawn.sh fetches
one matching the host's systemd without installing it). stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Build output (rootfs, nspawn, logs): the Makefile's .build/testbed unless TESTBED_BUILD says.
BUILD = Path(os.environ.get("TESTBED_BUILD", HERE.parents[2] / ".build" / "testbed"))
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# joins our cgroups, private mount ns with tmpfs on /run/systemd (nspawn keeps state there and
# this host's /run is plain ext4), optional hand-made overlay of the host root, exec nspawn
_LAUNCH = r"""
for d in "$@"; do case $d in --) break;; esac; echo $$ > "$d/cgroup.procs"; done
while [ "$1" != -- ]; do shift; done; shift
mount -t tmpfs -o mode=755 tb-run-systemd /run/systemd || exit 94
if [ "$TB_HOSTROOT" = 1 ]; then
  o=/run/systemd/tb-ovl; mkdir -p $o/upper $o/work $o/merged
  mount -t overlay tb-hostroot -o lowerdir=/,upperdir=$o/upper,workdir=$o/work $o/merged || exit 94
fi
exec "$@"
"""


def _mountpoint(fstype: str, opt: str | None = None) -> str | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, post = line.split(" - ", 1)
        f = post.split()
        if f[0] == fstype and (opt is None or opt in f[2].split(",")):
            return pre.split()[4]
    return None


def _transient_unit(props: dict | None) -> list[str]:
    """systemd-run as a transient exec unit: output streams back, the exit status is CMD's."""
    return [
        "systemd-run",
        "--quiet",
        "--wait",
        "--pipe",
        "--collect",
        "--service-type=exec",
        f"-EPATH={PATH}",
        "-ELANG=C.UTF-8",
        *[f"-p{k}={v}" for k, v in (props or {}).items()],
    ]


def _complete(
    argv: list[str], input: str | None, timeout: float, check: bool
) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def nspawn_binary() -> str:
    env = dict(os.environ, TESTBED_BUILD=str(BUILD))
    return subprocess.run(
        ["bash", str(HERE / "get-nspawn.sh")], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


class SystemdContainer:
    def __init__(
        self,
        root: str | os.PathLike | None = None,
        host_root: bool = False,
        unified: bool = True,
        binds=(),
        boot_timeout: float = 60,
        logdir: str | os.PathLike | None = None,
    ):
        self.host_root = host_root
        self.root = "/" if host_root else str(root or BUILD / "rootfs")
        self.unified = unified
        self.binds = list(binds)  # (host_path, container_path, read_only)
        self.boot_timeout = boot_timeout
        self.name = f"tbpy-{os.getpid()}-{random.randrange(1 << 16)}"
        self.logdir = Path(logdir or BUILD / "logs" / self.name)
        self.proc: subprocess.Popen | None = None
        self.leader: int | None = None
        self.cgdirs: list[str] = []
        self.timings: dict[str, float] = {}

    # ---- lifecycle ----
    def start(self) -> SystemdContainer:
        if not self.host_root and not os.access(f"{self.root}/lib/systemd/systemd", os.X_OK):
            raise RuntimeError(f"no OS tree at {self.root}: run make testbed")
        nspawn = nspawn_binary()
        self.logdir.mkdir(parents=True, exist_ok=True)
        v2 = _mountpoint("cgroup2")
        v1 = _mountpoint("cgroup", "name=systemd")
        self.cgdirs = [f"{m}/testbed/{self.name}" for m in (v2, v1) if m]
        for d in self.cgdirs:
            os.makedirs(d, exist_ok=True)
        args = (
            ["-D", "/run/systemd/tb-ovl/merged", "--tmpfs=/etc/systemd/system"]
            if self.host_root
            else ["-D", self.root, "--volatile=overlay"]
        )
        args += [
            "-M",
            self.name,
            "--register=no",
            "--keep-unit",
            "--private-network",
            "--link-journal=no",
            "--console=read-only",
        ]
        for host, inside, ro in self.binds:
            args.append(f"--bind{'-ro' if ro else ''}={host}:{inside}")
        args.append("-b")
        env = dict(os.environ, TB_HOSTROOT="1" if self.host_root else "0")
        if self.unified:
            env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        t0 = time.monotonic()
        self._console = open(self.logdir / "console.log", "wb")  # noqa: SIM115 - open while up
        self.proc = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                _LAUNCH,
                "tb-launch",
                *self.cgdirs,
                "--",
                nspawn,
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            deadline = t0 + self.boot_timeout
            while self.leader is None:
                self._check_alive(deadline)
                for c in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
                    for pid in c.read_text().split():
                        try:
                            status = Path(f"/proc/{pid}/status").read_text().splitlines()
                            ns = [line for line in status if line.startswith("NSpid:")]
                        except OSError:
                            continue
                        if ns and ns[0].split()[-1] == "1" and len(ns[0].split()) == 3:
                            self.leader = int(pid)
                time.sleep(0.02)
            self.timings["pid1_s"] = time.monotonic() - t0
            while True:
                self._check_alive(deadline)
                st = self.run(
                    "systemctl", "is-system-running", unit=False, timeout=10
                ).stdout.strip()
                if st in ("running", "degraded"):
                    break
                time.sleep(0.05)
            self.timings["boot_to_ready_s"] = time.monotonic() - t0
            self.state = st
        except BaseException:
            self.stop()
            raise
        return self

    def _check_alive(self, deadline: float) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"nspawn exited rc={self.proc.returncode}, see {self.logdir}/console.log"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"container did not boot in {self.boot_timeout}s")

    def stop(self, timeout: float = 15) -> None:
        t0 = time.monotonic()
        if self.proc and self.proc.poll() is None:
            if self.leader:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.leader, signal.SIGRTMIN + 4)  # systemd: poweroff
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self.timings["teardown_s"] = time.monotonic() - t0
        for d in self.cgdirs:  # anything left there was started by us: kill by PID, rmdir
            for procs in Path(d).rglob("cgroup.procs"):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        if self.cgdirs:
            time.sleep(0.1)
        for d in self.cgdirs:
            for sub in sorted(Path(d).rglob("*"), key=lambda p: -len(p.parts)):
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()
            for p in (d, os.path.dirname(d)):
                with contextlib.suppress(OSError):
                    os.rmdir(p)
        if getattr(self, "_console", None):
            self._console.close()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- running things ----
    def run(
        self,
        *cmd: str,
        unit: bool = True,
        timeout: float = 60,
        check: bool = False,
        input: str | None = None,
        props: dict | None = None,
    ) -> subprocess.CompletedProcess:
        ns = [
            "nsenter",
            "-t",
            str(self.leader),
            "-a",
            "--wd=/",
            "env",
            "-i",
            f"PATH={PATH}",
            "LANG=C.UTF-8",
            "HOME=/root",
            "TERM=dumb",
        ]
        if unit:
            ns += _transient_unit(props)
        return _complete(ns + list(cmd), input, timeout, check)

    def sh(self, script: str, **kw) -> subprocess.CompletedProcess:
        return self.run("bash", "-c", script, **kw)

    def show(self, unit: str, prop: str) -> str:
        return self.run("systemctl", "show", "-P", prop, unit, unit=False).stdout.strip()

    def journal(self, *matches: str) -> list[dict]:
        self.run("journalctl", "--sync", unit=False)
        out = self.run("journalctl", "--no-pager", "-o", "json", *matches, unit=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def install_unit(self, name: str, text: str) -> None:
        """Runtime unit: /run/systemd/system (gone with the container)."""
        self.run(
            "sh",
            "-c",
            f"mkdir -p /run/systemd/system && cat > /run/systemd/system/{name}",
            input=text,
            unit=False,
            check=True,
        )
        self.run("systemctl", "daemon-reload", unit=False, check=True)


def available() -> str | None:
    """None if a container can be booted here, else the reason (for pytest.skip)."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("unshare", "nsenter"):
        if not shutil.which(tool):
            return f"{tool} missing"
    if not os.access(BUILD / "rootfs/lib/systemd/systemd", os.X_OK):
        return f"no OS tree at {BUILD / 'rootfs'} (make testbed builds it)"
    try:
        nspawn_binary()
    except subprocess.CalledProcessError:
        return "no systemd-nspawn"
    return None


class LocalSystem(SystemdContainer):
    """Same interface, for code already running on the systemd machine (inside the VM tier,
    or a real host): the same test functions then run in both tiers."""

    def __init__(self):
        self.leader = None
        self.timings = {}

    def start(self):
        return self

    def stop(self, timeout: float = 15) -> None:
        pass

    def run(
        self,
        *cmd: str,
        unit: bool = True,
        timeout: float = 60,
        check: bool = False,
        input: str | None = None,
        props: dict | None = None,
    ) -> subprocess.CompletedProcess:
        pre = _transient_unit(props) if unit else []
        return _complete(pre + list(cmd), input, timeout, check)
