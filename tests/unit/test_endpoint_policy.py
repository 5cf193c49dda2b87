"""Which endpoints are accepted, warned about or refused (the security default)."""

from __future__ import annotations

import pytest

from circus_sd.control.server import EndpointVerdict, endpoint_verdict


@pytest.mark.parametrize(
    ("endpoint", "curve", "insecure", "verdict"),
    [
        ("ipc:///run/circus-sd/control.sock", False, False, EndpointVerdict.PRIVATE),
        ("tcp://127.0.0.1:5555", False, False, EndpointVerdict.OPEN_LOCALLY),
        ("tcp://[::1]:5555", False, False, EndpointVerdict.OPEN_LOCALLY),
        ("tcp://localhost:5555", False, False, EndpointVerdict.OPEN_LOCALLY),
        ("tcp://0.0.0.0:5555", False, False, EndpointVerdict.REFUSED),
        ("tcp://192.0.2.10:5555", False, False, EndpointVerdict.REFUSED),
        ("tcp://192.0.2.10:5555", False, True, EndpointVerdict.OPEN_TO_NETWORK),
        ("tcp://0.0.0.0:5555", True, False, EndpointVerdict.CURVE),
        ("tcp://127.0.0.1:5555", True, False, EndpointVerdict.CURVE),
        ("udp://127.0.0.1:5555", False, False, EndpointVerdict.UNSUPPORTED),
    ],
)
def test_endpoint_verdict(
    endpoint: str, curve: bool, insecure: bool, verdict: EndpointVerdict
) -> None:
    assert endpoint_verdict(endpoint, curve, insecure) is verdict
