"""The arbiter's own descriptor limit, read where an operator reads it: /proc/PID/limits."""

from __future__ import annotations

import os
import re

import pytest
from arbiter_harness import Circus, report_command
from control_helpers import wait_count

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(os.geteuid() != 0, reason="raising a hard limit takes root"),
]

STARTED_WITH = (1024, 4096)


def open_files(pid: int) -> tuple[int, int]:
    """(soft, hard) "Max open files" of a process, as the kernel shows it."""
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                soft, hard = re.findall(r"\d+", line)[:2]
                return int(soft), int(hard)
    raise AssertionError(f"no open files limit for {pid}")


def nr_open() -> int:
    with open("/proc/sys/fs/nr_open") as value:
        return int(value.read())


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "INVOCATION_ID"}
    return {**env, **extra}


def _config(circus: Circus) -> os.PathLike[str]:
    return circus.write_config(f"[watcher:web]\ncmd = {report_command(circus.tmp, 'web')}\n")


def _has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as status:
        effective = next(line for line in status if line.startswith("CapEff:"))
    return bool(int(effective.split()[1], 16) >> 24 & 1)


# Some sandboxes take CAP_SYS_RESOURCE even from root: there the VM tier checks this
# (tests/vm_guest/limits.py).
@pytest.mark.skipif(not _has_cap_sys_resource(), reason="this root has no CAP_SYS_RESOURCE")
def test_root_outside_systemd_raises_its_hard_limit_and_children_keep_theirs(
    circus: Circus,
) -> None:
    arbiter = circus.start(_config(circus), env=_env(), nofile=STARTED_WITH, capped=False)
    ceiling = min(nr_open(), 1 << 20)
    assert open_files(arbiter.pid) == (ceiling, ceiling)
    arbiter.wait_log(rf"RLIMIT_NOFILE raised to {ceiling} \(it was 1024, hard 4096\)")
    [child] = wait_count(arbiter, "web", 1)
    assert open_files(child) == STARTED_WITH


def test_under_systemd_the_units_limit_stays(circus: Circus) -> None:
    env = _env(INVOCATION_ID="0123456789abcdef0123456789abcdef")
    arbiter = circus.start(_config(circus), env=env, nofile=STARTED_WITH, capped=False)
    assert open_files(arbiter.pid) == (4096, 4096)


def test_without_cap_sys_resource_the_hard_limit_stays(circus: Circus) -> None:
    arbiter = circus.start(_config(circus), env=_env(), nofile=STARTED_WITH)
    assert open_files(arbiter.pid) == (4096, 4096)
