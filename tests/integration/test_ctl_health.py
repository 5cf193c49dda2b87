"""circusctl for scripts and operators: is-active/is-failed, the compact status on a terminal,
the completion scripts and the default endpoint, against a real arbiter."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
from arbiter_harness import ROOT, Circus, report_command, wait_until

pytestmark = pytest.mark.timeout(90)

CIRCUSCTL = ROOT / ".venv" / "bin" / "circusctl"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def ctl(circus: Circus, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CIRCUSCTL), "--endpoint", f"ipc://{circus.tmp}/control.sock", *args],
        capture_output=True, text=True, timeout=15, check=False, stdin=subprocess.DEVNULL,
    )


def state_of(circus: Circus, name: str) -> str:
    result = ctl(circus, "--json", "status", name, "--details")
    return str(__import__("json").loads(result.stdout)["details"][name]["state"])


@pytest.fixture
def three_states(circus: Circus) -> Circus:
    """`up` running, `down` stopped, `broken` failed (flapping until it gave up)."""
    config = circus.write_config(f"""
        [watcher:up]
        cmd = {report_command(circus.tmp, "up")}

        [watcher:down]
        cmd = {report_command(circus.tmp, "down")}
        autostart = false

        [watcher:broken]
        cmd = /bin/false
        flapping.attempts = 2
        flapping.window = 10
        flapping.retry_in = 0.1
        flapping.max_retry = 0
        """)
    circus.start(config)
    circus.reports.wait("up", 1)
    wait_until(lambda: state_of(circus, "broken") == "failed", 20.0, "broken to fail")
    return circus


def test_is_active_and_is_failed_answer_as_systemctl(three_states: Circus) -> None:
    circus = three_states
    cases = [
        # (command line, stdout, exit status): 0 if one is in the state asked, else 3 for
        # is-active and 1 for is-failed, 4 if no name is a watcher.
        (("is-active", "up"), "active\n", 0),
        (("is-active", "down"), "inactive\n", 3),
        (("is-active", "broken"), "failed\n", 3),
        (("is-active", "down", "up"), "inactive\nactive\n", 0),
        (("is-active", "nosuch"), "inactive\n", 4),
        (("is-failed", "broken"), "failed\n", 0),
        (("is-failed", "up", "down"), "active\ninactive\n", 1),
        (("is-failed", "*"), "failed\ninactive\nactive\n", 0),
        (("is-failed", "nosuch"), "inactive\n", 4),
        (("is-active", "--quiet", "up"), "", 0),
        (("is-active", "-q", "down"), "", 3),
    ]
    for args, stdout, status in cases:
        result = ctl(circus, *args)
        assert (result.stdout, result.returncode, result.stderr) == (stdout, status, ""), args


def test_status_for_scripts_keeps_circus_output_and_status(three_states: Circus) -> None:
    result = ctl(three_states, "status")
    assert (result.stdout, result.returncode) == (
        "broken: stopped\ndown: stopped\nup: active\n", 0)


def run_on_terminal(argv: list[str], columns: int = 100, timeout: float = 15.0) -> str:
    """What `argv` prints on a pseudo-terminal `columns` wide, escape codes removed."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(argv[0], argv)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            output += data
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    return ANSI.sub("", output.decode()).replace("\r\n", "\n")


def test_status_on_a_terminal_is_one_row_per_watcher_even_with_40_processes(
    circus: Circus,
) -> None:
    config = circus.write_config(f"""
        [watcher:many]
        cmd = {report_command(circus.tmp, "many")}
        numprocesses = 40

        [watcher:few]
        cmd = {report_command(circus.tmp, "few")}
        numprocesses = 2
        """)
    circus.start(config)
    for wid in range(1, 41):
        circus.reports.wait("many", wid)
    endpoint = f"ipc://{circus.tmp}/control.sock"

    lines = [line for line in run_on_terminal(
        [str(CIRCUSCTL), "--endpoint", endpoint, "status"], columns=80).splitlines() if line]
    assert len(lines) == 3, lines  # the header, few, many
    header, few, many = (line.split() for line in lines)
    assert header == ["watcher", "state", "procs", "uptime", "restarts", "cpu", "mem"]
    assert few[:3] == ["few", "active", "2/2"] and many[:3] == ["many", "active", "40/40"]
    assert re.fullmatch(r"\d+(\.\d)?[BKMG]", many[-1]), many

    rows = [line for line in run_on_terminal(
        [str(CIRCUSCTL), "--endpoint", endpoint, "status", "--all"], columns=80).splitlines()
        if line]
    pids = {int(p) for p in ctl(circus, "list", "many").stdout.strip().split(",")}
    listed = {int(m[1]) for m in (re.match(r"\s*[├└] (\d+)", row) for row in rows) if m}
    assert pids <= listed and len(rows) == 1 + 2 + 2 + 40, rows


def test_completion_scripts_come_from_the_command_table(circus: Circus) -> None:
    bash = subprocess.run([str(CIRCUSCTL), "completion", "bash"], capture_output=True,
                          text=True, timeout=15, check=True).stdout
    generated = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "packaging/deb/generate.py"),
         "completion"], capture_output=True, text=True, timeout=15, check=True).stdout
    assert bash == generated  # the package's file is the command's output
    config = circus.write_config(f"""
        [watcher:webapp]
        cmd = {report_command(circus.tmp, "webapp")}
        """)
    circus.start(config)
    script = circus.tmp / "circusctl.bash"
    script.write_text(bash)
    endpoint = f"ipc://{circus.tmp}/control.sock"

    def complete(line: str) -> list[str]:
        program = (f"source {script}; COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}; "
                   f"_circusctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
        env = {**os.environ, "PATH": f"{CIRCUSCTL.parent}:{os.environ['PATH']}",
               "CIRCUSCTL_ENDPOINT": endpoint}
        out = subprocess.run(["bash", "-c", program], capture_output=True, text=True,
                             timeout=15, check=True, env=env).stdout
        return out.split()

    assert {"is-active", "is-failed"} <= set(complete("circusctl is-"))
    assert complete("circusctl tail web") == ["webapp"]
    assert complete("circusctl tail webapp w") == ["webapp"]  # every argument is a name
    assert set(complete("circusctl tail webapp --")) >= {"--lines", "--since", "--no-follow"}
    assert sorted(complete("circusctl completion ")) == ["bash", "fish", "zsh"]

    for shell, checker in (("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])):
        text = subprocess.run([str(CIRCUSCTL), "completion", shell], capture_output=True,
                              text=True, timeout=15, check=True).stdout
        assert "tail" in text and "is-active" in text
        if shutil.which(checker[0]):
            path = circus.tmp / f"circusctl.{shell}"
            path.write_text(text)
            subprocess.run([*checker, str(path)], check=True, timeout=15)


def test_without_an_endpoint_circusctl_tries_circus_port_and_names_both(tmp_path: Path) -> None:
    # A network namespace of our own: nothing listens on its 127.0.0.1:5555, whatever runs on
    # the machine; and a private /run/circus-sd, so that circus-sd's default socket is absent.
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for private network and mount namespaces")
    program = (f"mount -t tmpfs tmpfs /run && ip link set lo up 2>/dev/null; "
               f"exec env -u CIRCUSCTL_ENDPOINT {CIRCUSCTL} status")
    result = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", program],
                            capture_output=True, text=True, timeout=15, check=False)
    assert result.returncode == 1, result
    assert "ipc:///run/circus-sd/control.sock" in result.stderr
    assert "tcp://127.0.0.1:5555" in result.stderr
