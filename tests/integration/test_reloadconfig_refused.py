"""`reloadconfig` of a file that is refused, waited for or not, and `env_file` through reloads:
a real arbiter, real children, the real circusctl."""

from __future__ import annotations

import subprocess

import pytest
from arbiter_harness import ROOT, Circus, report_command

pytestmark = pytest.mark.timeout(60)

CIRCUSCTL = ROOT / ".venv" / "bin" / "circusctl"


def circusctl(circus: Circus, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(CIRCUSCTL), "--endpoint", f"ipc://{circus.tmp}/control.sock", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def web(circus: Circus, extra: str = "") -> str:
    return f"""
        [watcher:web]
        cmd = {report_command(circus.tmp, "web")}
        graceful_timeout = 2
        {extra}
        """


@pytest.mark.parametrize("waiting", [False, True], ids=["not-waiting", "waiting"])
def test_a_refused_file_is_the_replys_error_and_the_running_config_stays(
    circus: Circus, waiting: bool
) -> None:
    config = circus.write_config(web(circus))
    arbiter = circus.start(config)
    first = circus.reports.wait("web", 1)["pid"]

    circus.write_config(web(circus, "numprocesses = lots"))
    result = circusctl(circus, "reloadconfig", *(["--waiting"] if waiting else []))
    assert result.returncode != 0
    # file:line (the [circus] header written by the harness puts numprocesses on line 8)
    assert f"{config}:8: [watcher:web] numprocesses" in result.stderr, result
    assert "lots" in result.stderr
    assert result.stdout == ""

    # Nothing changed: the same process, the same options, and the refusal is in the log.
    status = circusctl(circus, "list", "web")
    assert status.stdout.strip() == str(first)
    options = circusctl(circus, "options", "web")
    assert "numprocesses: 1" in options.stdout.splitlines(), options
    arbiter.wait_log("reload refused, keeping the running configuration: .*numprocesses")

    # A good file afterwards is applied as usual, not waiting for it either.
    circus.write_config(web(circus, "numprocesses = 2"))
    assert circusctl(circus, "reloadconfig").returncode == 0
    circus.reports.wait("web", 2)


def test_env_file_is_read_at_start_and_again_at_each_reload(circus: Circus) -> None:
    env_file = circus.tmp / "web.env"
    env_file.write_text("# the service's settings\nGREETING='hello world'\nLEVEL=1\n")
    config = circus.write_config(f"""
        [env:web]
        LEVEL = from-section
        SECTION_ONLY = yes

        [watcher:web]
        cmd = {report_command(circus.tmp, "web")}
        graceful_timeout = 2
        env_file = web.env -optional.env
        """)
    circus.start(config)
    env = circus.reports.wait("web", 1)["env"]
    assert (env["GREETING"], env["LEVEL"], env["SECTION_ONLY"]) == ("hello world", "1", "yes")
    first = circus.reports.get("web", 1)
    assert first is not None

    # The file changed: a reload reads it again, and the changed environment restarts the
    # watcher's process.
    env_file.write_text("GREETING=bonjour\nLEVEL=2\n")
    assert circusctl(circus, "reloadconfig", "--waiting").returncode == 0
    report = circus.reports.wait("web", 1, timeout=10, not_pid=first["pid"])
    assert (report["env"]["GREETING"], report["env"]["LEVEL"]) == ("bonjour", "2")

    # The file is gone: the reload is refused with both places named; the process stays.
    env_file.unlink()
    result = circusctl(circus, "reloadconfig")
    assert result.returncode != 0
    assert f"{config}:" in result.stderr and "env_file" in result.stderr, result
    assert f"{env_file}: no such file" in result.stderr, result
    assert circusctl(circus, "list", "web").stdout.strip() == str(report["pid"])
