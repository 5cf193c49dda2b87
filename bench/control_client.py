"""One of the concurrent control clients: `status` calls in a loop over a shared time window.

    python -m bench.control_client KIND ADDRESS DURATION

Prints "ready" once its library is imported and a first call answered, then reads the start time
(a time.monotonic() reading: CLOCK_MONOTONIC is the same in every process) from stdin, calls until
start + DURATION, and prints "calls late_s errors".
"""

from __future__ import annotations

import sys
import time

from bench.control import ControlError, make_client
from bench.supervisors import WATCHER


def main(argv: list[str]) -> int:
    kind, address, duration = argv[0], argv[1], float(argv[2])
    client = make_client(kind, address, WATCHER, timeout=5.0)
    try:
        client.status()
        print("ready", flush=True)
        start_at = float(sys.stdin.readline())
        while time.monotonic() < start_at:
            time.sleep(min(0.01, max(0.0, start_at - time.monotonic())))
        late = time.monotonic() - start_at
        end = start_at + duration
        calls = errors = 0
        while time.monotonic() < end:
            try:
                client.status()
                calls += 1
            except ControlError:
                errors += 1
        print(calls, f"{late:.4f}", errors, flush=True)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
