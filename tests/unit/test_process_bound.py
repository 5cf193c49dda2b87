"""The bound on the number of processes (`[circus] max_processes`): its default from the
machine's limits, and the refusals of configuration files that ask for more."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from circus_sd.config import ConfigError, load_config
from circus_sd.process_bound import (
    PID_MAX_LIMIT,
    Limits,
    ProcessBound,
    ProcessBoundError,
    default_bound,
    process_bound,
)

ENV = {"PATH": os.defpath}


def test_the_default_is_the_tightest_of_the_limits() -> None:
    machine = Limits(nofile=1024, nproc=None, pid_max=32768, threads_max=192726)
    bound = default_bound(machine)
    # One descriptor at least per process (its pidfd), 32 kept free for the control socket.
    assert bound.limit == 1024 - 32
    assert "RLIMIT_NOFILE 1024" in bound.source
    assert default_bound(Limits(1 << 20, 4000, 32768, 192726)) == ProcessBound(
        4000, "the default, set by RLIMIT_NPROC 4000"
    )
    assert default_bound(Limits(1 << 20, None, 32768, 9000)).limit == 9000
    assert default_bound(Limits(None, None, None, None)).limit == PID_MAX_LIMIT


def test_a_configured_bound_wins_over_the_machines() -> None:
    machine = Limits(nofile=64, nproc=None, pid_max=None, threads_max=None)
    assert process_bound(500, machine) == ProcessBound(500, "[circus] max_processes")
    assert process_bound(None, machine).limit == 64 - 16


def test_the_machine_limits_are_read() -> None:
    limits = Limits.read()
    assert limits.nofile is None or limits.nofile > 0
    assert limits.pid_max is None or limits.pid_max > 0
    if os.geteuid() == 0:
        assert limits.nproc is None, "RLIMIT_NPROC does not hold back root"


def test_asking_past_the_bound_names_it_and_what_sets_it() -> None:
    bound = ProcessBound(100, "[circus] max_processes")
    bound.check("web", 60, others=40)
    with pytest.raises(ProcessBoundError) as refused:
        bound.check("web", 1_000_000_000, others=40)
    assert str(refused.value) == (
        "web: numprocesses 1000000000 would make 1000000040 processes in all, above "
        "max_processes = 100 ([circus] max_processes)"
    )


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "circus.ini"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as refused:
        load_config(str(path), ENV)
    return str(refused.value)


def test_an_absurd_numprocesses_is_refused_with_file_and_line(tmp_path: Path) -> None:
    path = _config(tmp_path, """
        [watcher:web]
        cmd = sleep 1
        numprocesses = 99999999999999999999
        """)
    assert _refusal(path) == (
        f"{path}:3: [watcher:web] numprocesses: expected an integer <= {PID_MAX_LIMIT}, "
        "got '99999999999999999999'"
    )


def test_numprocesses_past_max_processes_is_refused_at_its_line(tmp_path: Path) -> None:
    path = _config(tmp_path, """
        [circus]
        max_processes = 500

        [watcher:web]
        cmd = sleep 1
        numprocesses = 501
        """)
    assert _refusal(path) == (
        f"{path}:6: [watcher:web] numprocesses: 501 is above max_processes = 500 "
        "([circus] max_processes)"
    )


def test_watchers_adding_up_past_max_processes_are_refused_where_they_cross_it(
    tmp_path: Path,
) -> None:
    path = _config(tmp_path, """
        [circus]
        max_processes = 500

        [watcher:one]
        cmd = sleep 1
        numprocesses = 300

        [watcher:two]
        cmd = sleep 1
        numprocesses = 200

        [watcher:three]
        cmd = sleep 1
        """)
    assert _refusal(path) == (
        f"{path}:12: [watcher:three] numprocesses: 1 makes 501 processes with the watchers "
        "before, above max_processes = 500 ([circus] max_processes)"
    )
    path.write_text(path.read_text().replace("numprocesses = 200", "numprocesses = 199"))
    config, _warnings = load_config(str(path), ENV)
    assert sum(w.numprocesses for w in config.watchers) == 500


def test_the_default_bound_holds_for_files_too(tmp_path: Path) -> None:
    bound = process_bound(None)
    if bound.limit >= PID_MAX_LIMIT:
        pytest.skip("no limit of this machine is below the kernel's own")
    path = _config(tmp_path, f"""
        [watcher:web]
        cmd = sleep 1
        numprocesses = {bound.limit + 1}
        """)
    assert _refusal(path).endswith(f"is above {bound}")


@pytest.mark.parametrize("value", ["0", "-1", str(PID_MAX_LIMIT + 1), "many"])
def test_max_processes_takes_a_count(tmp_path: Path, value: str) -> None:
    path = _config(tmp_path, f"[circus]\nmax_processes = {value}\n")
    assert _refusal(path).startswith(f"{path}:2: [circus] max_processes: expected an integer")


def test_the_bound_knows_nothing_of_the_control_layer() -> None:
    """The config layer imports process_bound (PID_MAX_LIMIT): neither may pull in the control
    protocol. The control handlers turn ProcessBoundError into their error reply."""
    from circus_sd.control.protocol import CommandError

    assert not issubclass(ProcessBoundError, CommandError)
    assert ProcessBoundError("the reason").reason == "the reason"
    code = (
        "import sys, circus_sd.process_bound, circus_sd.config.model\n"
        "control = sorted(m for m in sys.modules if m.startswith('circus_sd.control'))\n"
        "assert not control, control\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
