"""The VM tier: one boot of a real kernel (cgroup controllers on) running tests/vm_guest."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import BUILD, HERE, ROOT

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]


def test_cgroup_limits_on_a_real_kernel() -> None:
    """memory_max OOM, pids_max, cpu_max and `set` of a limit, inside the VM (see limits.py)."""
    result = subprocess.run(
        [
            "bash",
            str(HERE / "testbed" / "run-vm.sh"),
            "--src",
            str(ROOT),
            "--cmd",
            str(ROOT / "tests" / "vm_guest" / "run.sh"),
            "--timeout",
            "840",
        ],
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
        env=dict(os.environ, TESTBED_BUILD=str(BUILD)),
    )
    print(result.stdout[-6000:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
