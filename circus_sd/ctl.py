"""`circusctl`: drive a running circus-sd over its control endpoint."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("circusctl: the control channel is not available in this version yet", file=sys.stderr)
    return 1
