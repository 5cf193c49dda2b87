"""Pipe sizes on real pipes: grown fourfold up to 1 MiB, within the budget, which closing frees."""

from __future__ import annotations

import fcntl
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from circus_sd.output.pipe_sizes import PIPE_MAX, PipeSizes, user_limit

ROOT = pathlib.Path(__file__).resolve().parents[2]

KIB = 1024
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


@pytest.fixture
def pipes() -> Iterator[list[int]]:
    """Two fresh pipes' read ends (the kernel's 64 KiB each)."""
    fds: list[int] = []
    for _ in range(2):
        fds += os.pipe()
    yield fds[0::2]
    for fd in fds:
        os.close(fd)


def size(fd: int) -> int:
    return int(fcntl.fcntl(fd, F_GETPIPE_SZ))


def test_a_full_pipe_grows_fourfold_up_to_1_mib(pipes: list[int]) -> None:
    sizes = PipeSizes(user_limit=64 << 20)
    fd = pipes[0]
    sizes.opened(size(fd))
    assert sizes.grow(fd, 64 * KIB) == 256 * KIB == size(fd)
    assert sizes.grow(fd, 256 * KIB) == PIPE_MAX == size(fd)
    assert sizes.grow(fd, PIPE_MAX) == PIPE_MAX
    assert sizes.in_use == PIPE_MAX


def test_growth_stays_within_a_share_of_the_users_limit(pipes: list[int]) -> None:
    first, second = pipes
    sizes = PipeSizes(user_limit=4 * 320 * KIB)  # a budget of 320 KiB
    sizes.opened(64 * KIB)
    sizes.opened(64 * KIB)
    assert sizes.grow(first, 64 * KIB) == 256 * KIB  # 320 KiB in use: the whole budget
    assert sizes.grow(second, 64 * KIB) == 64 * KIB == size(second)
    sizes.closed(256 * KIB)  # the first process exited
    assert sizes.grow(second, 64 * KIB) == 256 * KIB == size(second)
    assert sizes.in_use == 256 * KIB


def test_without_a_limit_every_pipe_is_made_1_mib(pipes: list[int]) -> None:
    sizes = PipeSizes(user_limit=None)
    sizes.made(pipes[0])
    assert size(pipes[0]) == PIPE_MAX
    counted = PipeSizes(user_limit=64 << 20)
    counted.made(pipes[1])
    assert size(pipes[1]) == 64 * KIB  # grown only once found full


@pytest.mark.skipif(os.geteuid() != 0, reason="root outside the namespace, to compare")
def test_root_in_a_user_namespace_has_its_pipes_counted() -> None:
    """The kernel skips the count for CAP_SYS_RESOURCE/CAP_SYS_ADMIN in the initial user
    namespace only: root in a rootless container (every capability in its own namespace) that
    made every pipe 1 MiB used up its user's 64 MiB in 64 pipes, and every later pipe of that
    user got 8 KiB. Asked in a real user namespace, as `unshare -r` (podman) makes one."""
    if user_limit() is not None:
        pytest.skip("this root's pipes are counted already (no CAP_SYS_RESOURCE/CAP_SYS_ADMIN)")
    probe = "from circus_sd.output.pipe_sizes import user_limit; print(user_limit())"
    inside = subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-c", probe],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )
    if inside.returncode and "unshare failed" in inside.stderr:
        pytest.skip(f"no user namespaces here: {inside.stderr.strip()}")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.split() != ["None"] and int(inside.stdout) > 0, inside.stdout
