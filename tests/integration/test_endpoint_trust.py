"""circusctl's fallback to Circus's TCP port talks only to an arbiter root or the caller runs:
any local user can listen on a free port and would otherwise get our commands."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from circus_sd.ctl.endpoint_choice import tcp_listening

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(os.geteuid() != 0, reason="listening as another user takes root"),
]

LISTEN = (
    "import socket, sys\n"
    "s = socket.socket()\n"
    "s.bind(('127.0.0.1', 0))\n"
    "s.listen()\n"
    "print(s.getsockname()[1], flush=True)\n"
    "sys.stdin.read()\n"
)


def _listener(*identity: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [*identity, sys.executable, "-c", LISTEN],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


@pytest.mark.parametrize(
    ("identity", "trusted"),
    [((), True), (("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"), False)],
    ids=["root", "nobody"],
)
def test_a_port_is_trusted_only_when_root_or_the_caller_listens(
    identity: tuple[str, ...], trusted: bool
) -> None:
    process, port = _listener(*identity)
    try:
        why_not = tcp_listening(f"tcp://127.0.0.1:{port}")
        if trusted:
            assert why_not is None
        else:
            assert why_not == "it is listened on by uid 65534, neither root nor you: not trusted"
    finally:
        process.kill()
        process.communicate(timeout=10)
