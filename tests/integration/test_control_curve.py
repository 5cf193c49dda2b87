"""tcp:// endpoints with CURVE: authorized keys get in, everyone else gets nothing."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import zmq
import zmq.auth
from arbiter_harness import CIRCUS_SD, ROOT, Circus
from control_helpers import loopback_port, watcher_sections

pytestmark = pytest.mark.timeout(60)

CIRCUSCTL = ROOT / ".venv" / "bin" / "circusctl"


def circusctl(endpoint: str, *args: str, keys: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCUSCTL_")}
    if keys is not None:
        env["CIRCUSCTL_CURVE_SERVER_KEY"] = str(keys / "server.key")
        env["CIRCUSCTL_CURVE_KEY"] = str(keys / "client.key_secret")
    return subprocess.run(
        [str(CIRCUSCTL), "--endpoint", endpoint, "--timeout", "1.5", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=20,
        check=False,
    )


def test_curve_lets_authorized_clients_in_and_keeps_others_out(circus: Circus) -> None:
    keys = circus.tmp / "keys"
    made = subprocess.run(
        [str(CIRCUS_SD), "--make-curve-keys", str(keys)],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert "server.key_secret" in made.stdout
    assert (keys / "server.key_secret").stat().st_mode & 0o777 == 0o600
    control, events = loopback_port(), loopback_port()
    endpoint = f"tcp://127.0.0.1:{control}"
    config = circus.tmp / "circus.ini"
    config.write_text(
        textwrap.dedent(f"""
        [circus]
        endpoint = {endpoint}
        pubsub_endpoint = tcp://127.0.0.1:{events}
        curve_secret_key = {keys / "server.key_secret"}
        curve_clients = {keys / "clients"}

        """)
        + watcher_sections(circus, {"web": {"numprocesses": 2}})
    )
    arbiter = circus.start(config)
    assert "has no authentication" not in arbiter.log()
    assert "CURVE authentication" in arbiter.log()

    allowed = circusctl(endpoint, "status", keys=keys)
    assert (allowed.returncode, allowed.stdout) == (0, "web: active\n"), allowed

    # No keys: the CURVE handshake never completes, so no reply ever comes.
    anonymous = circusctl(endpoint, "status", keys=None)
    assert anonymous.returncode == 1 and "web" not in anonymous.stdout

    # A well-formed key pair that is not in curve_clients is refused by the authenticator.
    stranger = circus.tmp / "stranger"
    stranger.mkdir()
    zmq.auth.create_certificates(str(stranger), "client")
    (stranger / "server.key").write_bytes((keys / "server.key").read_bytes())
    refused = circusctl(endpoint, "status", keys=stranger)
    assert refused.returncode == 1 and "web" not in refused.stdout
    assert arbiter.running()


def test_a_network_endpoint_without_keys_is_refused(circus: Circus) -> None:
    control, events = loopback_port(), loopback_port()
    config = circus.tmp / "circus.ini"
    # Refused before anything is bound: 0.0.0.0 is never actually opened.
    config.write_text(
        textwrap.dedent(f"""
        [circus]
        endpoint = tcp://0.0.0.0:{control}
        pubsub_endpoint = tcp://127.0.0.1:{events}

        """)
        + watcher_sections(circus, {"web": {}})
    )
    result = circus.run(str(config))
    assert result.returncode == 78
    assert "curve_secret_key" in result.stderr and "insecure_tcp" in result.stderr
