#!/usr/bin/env python3
"""A supervised child for the system tests: records its start and every signal it receives."""

import os
import signal
import sys
import time

LOG = os.environ.get("RECORDER_LOG", "/run/recorder.log")
NAME = sys.argv[1] if len(sys.argv) > 1 else "?"
WID = os.environ.get("CIRCUS_WID", "?")


def record(event: str) -> None:
    with open(LOG, "a") as f:
        f.write(f"{time.monotonic():.6f} {event} {NAME} {WID} {os.getpid()}\n")


def on_signal(signum: int, frame: object) -> None:
    record(f"got-{signal.Signals(signum).name}")
    sys.exit(0)


for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGHUP):
    signal.signal(sig, on_signal)
record("start")
while True:
    signal.pause()
