"""The command line: refusing bad configs, --check, and the pidfile lock."""

from __future__ import annotations

import re
import shlex
import signal
from pathlib import Path

import pytest
from arbiter_harness import Circus, alive, report_command

# Each test takes a few seconds; this only bounds a hang.
pytestmark = pytest.mark.timeout(30)

EX_CONFIG = 78


def _line_of(path: Path, text: str) -> int:
    return path.read_text().splitlines().index(text) + 1


def _marker_watcher(circus: Circus) -> str:
    """A watcher that leaves a file behind as soon as it is started."""
    script = f"touch {shlex.quote(str(circus.tmp / 'started'))}; exec sleep 30"
    return f"[watcher:marker]\ncmd = /bin/sh -c {shlex.quote(script)}\npriority = 100\n"


BAD_CONFIGS = {
    "bad value": ("numprocesses = lots", "numprocesses"),
    "not a user name": ("uid = -1", "uid"),
    "unbalanced quotes": ("cmd = {tmp}/program 'oops", "cmd"),
}


@pytest.mark.parametrize("case", [*BAD_CONFIGS, "missing file"])
def test_bad_config_exits_78_and_starts_nothing(circus: Circus, case: str) -> None:
    if case == "missing file":
        path = circus.tmp / "no-such-circus.ini"
        expected = re.escape(f"{path}: configuration file not found")
    else:
        bad, option = BAD_CONFIGS[case]
        bad = bad.format(tmp=circus.tmp)
        cmd = "" if option == "cmd" else "cmd = /bin/true\n"
        path = circus.write_config(f"{_marker_watcher(circus)}\n[watcher:bad]\n{cmd}{bad}\n")
        lines = [_line_of(path, bad)]
        if option == "cmd":
            # The command is split once the whole section is read: the error may point at
            # the section's header instead of the cmd line.
            lines.append(_line_of(path, "[watcher:bad]"))
        line = "|".join(str(n) for n in lines)
        expected = rf"{re.escape(str(path))}:({line}): \[watcher:bad\] {option}: "

    result = circus.run(str(path), timeout=5.0)

    assert result.returncode == EX_CONFIG, result.stderr
    assert re.search(expected, result.stderr), result.stderr
    assert not (circus.tmp / "started").exists(), "a process was started"
    assert circus.leftovers() == []


def test_check_validates_without_starting_anything(circus: Circus) -> None:
    web = f"[watcher:web]\ncmd = {report_command(circus.tmp, 'web')}\n"
    good = circus.write_config(f"{_marker_watcher(circus)}\n{web}", name="good.ini")
    bad = circus.write_config(
        f"{_marker_watcher(circus)}\n{web}graceful_timeout = soon\n", name="bad.ini"
    )

    checked = circus.run("--check", str(good))
    refused = circus.run("--check", str(bad))

    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == f"{good}: OK, 2 watcher(s)"
    assert refused.returncode == EX_CONFIG
    line = _line_of(bad, "graceful_timeout = soon")
    assert f"{bad}:{line}: [watcher:web] graceful_timeout: " in refused.stderr
    assert not (circus.tmp / "started").exists(), "--check started a process"
    assert circus.reports.wids("web") == []
    assert circus.leftovers() == []


def test_second_arbiter_on_the_same_pidfile_refuses_to_start(circus: Circus) -> None:
    pidfile = circus.tmp / "circus.pid"
    config = circus.write_config(f"""
        [watcher:web]
        cmd = {report_command(circus.tmp, "web")}
        """)
    first = circus.start(config, "--pidfile", str(pidfile))
    web = circus.reports.wait("web", 1)
    assert pidfile.read_text().strip() == str(first.pid)

    second = circus.run(str(config), "--pidfile", str(pidfile))

    assert second.returncode not in (0, EX_CONFIG)
    assert re.search(
        rf"{re.escape(str(pidfile))} is locked by pid {first.pid}: another circus-sd is running",
        second.stderr,
    ), second.stderr
    assert first.running()
    assert pidfile.read_text().strip() == str(first.pid)
    assert alive(web["pid"])
    assert len(circus.reports.history("web")) == 1, "the second arbiter started a process"
    assert first.stop() == 0
    assert not pidfile.exists(), "the pidfile outlived its arbiter"


def test_sigint_and_sigquit_stop_gracefully(circus: Circus) -> None:
    config = circus.write_config(f"""
        [watcher:web]
        cmd = {report_command(circus.tmp, "web")}
        """)
    for signum in (signal.SIGINT, signal.SIGQUIT):
        arbiter = circus.start(config)
        web = circus.reports.wait("web", 1)
        arbiter.send(signum)
        assert arbiter.wait_exit(5.0) == 0, signum.name
        assert not alive(web["pid"])
        (circus.tmp / "web.1.json").unlink()
