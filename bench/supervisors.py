"""The three supervisors under test: how to configure, start and reach each one.

circus-sd and Circus read the very same INI file (circus-sd is Circus-compatible); supervisord
gets the equivalent `[program]` with `numprocs`. Every endpoint lives in the run's own temporary
directory: ipc:// for Circus's ZMQ sockets, a unix socket for supervisord's XML-RPC.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from typing import Protocol

from bench.control import CircusControl, ControlClient, SupervisorControl

WATCHER = "w"


@dataclasses.dataclass(frozen=True)
class Workload:
    """What the supervisor runs: `numprocesses` copies of `argv`, optionally logged to one file.

    With `watchers` > 1: that many watchers (programs) of `numprocesses` each, named w1, w2...,
    each logging to its own file (`stdout_file` with "{watcher}" replaced by the name).
    """

    argv: tuple[str, ...]
    numprocesses: int
    autostart: bool = True
    stdout_file: str | None = None
    watchers: int = 1

    def names(self) -> list[str]:
        if self.watchers == 1:
            return [WATCHER]
        return [f"{WATCHER}{n}" for n in range(1, self.watchers + 1)]

    def stdout_files(self) -> list[str]:
        """Every file the output lands in, one per watcher."""
        if self.stdout_file is None:
            return []
        return [self.stdout_file.replace("{watcher}", name) for name in self.names()]


class Supervisor(Protocol):
    @property
    def name(self) -> str: ...

    def write_config(self, run_dir: str, workload: Workload) -> str: ...

    def command(self, config: str) -> list[str]: ...

    def control(self, run_dir: str, timeout: float = 5.0) -> ControlClient: ...

    def control_address(self, run_dir: str) -> tuple[str, str]: ...

    def cli_status(self, run_dir: str, config: str) -> list[str]: ...


def _circus_ini(run_dir: str, workload: Workload) -> str:
    lines = [
        "[circus]",
        f"endpoint = ipc://{run_dir}/ctl.sock",
        f"pubsub_endpoint = ipc://{run_dir}/pub.sock",
        # Empty: no UDP multicast discovery socket (Circus joins a multicast group by default).
        "multicast_endpoint =",
    ]
    files = workload.stdout_files()
    for n, name in enumerate(workload.names()):
        lines += [
            "",
            f"[watcher:{name}]",
            f"cmd = {workload.argv[0]}",
            f"args = {shlex.join(workload.argv[1:])}",
            f"numprocesses = {workload.numprocesses}",
            f"autostart = {str(workload.autostart).lower()}",
        ]
        if files:
            lines += ["stdout_stream.class = FileStream", f"stdout_stream.filename = {files[n]}"]
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class CircusLike:
    """circus-sd, or Circus itself: a daemon command and a circusctl, over the same INI."""

    name: str
    daemon: list[str]
    circusctl: str

    def write_config(self, run_dir: str, workload: Workload) -> str:
        path = os.path.join(run_dir, "circus.ini")
        with open(path, "w") as f:
            f.write(_circus_ini(run_dir, workload))
        return path

    def command(self, config: str) -> list[str]:
        return [*self.daemon, config]

    def control(self, run_dir: str, timeout: float = 5.0) -> ControlClient:
        return CircusControl(f"ipc://{run_dir}/ctl.sock", WATCHER, timeout)

    def control_address(self, run_dir: str) -> tuple[str, str]:
        return "circus", f"ipc://{run_dir}/ctl.sock"

    def cli_status(self, run_dir: str, config: str) -> list[str]:
        return [self.circusctl, "--endpoint", f"ipc://{run_dir}/ctl.sock", "status"]


@dataclasses.dataclass(frozen=True)
class Supervisord:
    name: str
    bin_dir: str

    def write_config(self, run_dir: str, workload: Workload) -> str:
        n = workload.numprocesses
        child_logs = os.path.join(run_dir, "childlogs")
        os.makedirs(child_logs, exist_ok=True)
        lines = [
            "[unix_http_server]",
            f"file = {run_dir}/sup.sock",
            "",
            "[supervisord]",
            "nodaemon = true",
            f"logfile = {run_dir}/supervisord.log",
            f"pidfile = {run_dir}/supervisord.pid",
            f"childlogdir = {child_logs}",
            # Three pipes and two AUTO log files per process; the defaults (1024/200) are too few.
            f"minfds = {max(1024, 6 * n * workload.watchers + 256)}",
            f"minprocs = {max(200, n * workload.watchers + 200)}",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl = unix://{run_dir}/sup.sock",
        ]
        files = workload.stdout_files()
        for index, name in enumerate(workload.names()):
            lines += [
                "",
                f"[program:{name}]",
                f"command = {shlex.join(workload.argv)}",
                "process_name = %(program_name)s_%(process_num)04d",
                f"numprocs = {n}",
                f"autostart = {str(workload.autostart).lower()}",
                "autorestart = true",
            ]
            if files:
                lines += [
                    f"stdout_logfile = {files[index]}",
                    "stdout_logfile_maxbytes = 0",
                    "stdout_logfile_backups = 0",
                ]
        path = os.path.join(run_dir, "supervisord.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def command(self, config: str) -> list[str]:
        return [os.path.join(self.bin_dir, "supervisord"), "-n", "-c", config]

    def control(self, run_dir: str, timeout: float = 5.0) -> ControlClient:
        return SupervisorControl(f"unix://{run_dir}/sup.sock", WATCHER, timeout)

    def control_address(self, run_dir: str) -> tuple[str, str]:
        return "supervisor", f"unix://{run_dir}/sup.sock"

    def cli_status(self, run_dir: str, config: str) -> list[str]:
        return [os.path.join(self.bin_dir, "supervisorctl"), "-c", config, "status"]


def all_supervisors(project_venv: str, bench_venv: str) -> list[Supervisor]:
    bench_bin = os.path.join(bench_venv, "bin")
    return [
        CircusLike(
            "circus-sd",
            [os.path.join(project_venv, "bin", "circus-sd")],
            os.path.join(project_venv, "bin", "circusctl"),
        ),
        CircusLike(
            "circus",
            [os.path.join(bench_bin, "circusd")],
            os.path.join(bench_bin, "circusctl"),
        ),
        Supervisord("supervisord", bench_bin),
    ]
