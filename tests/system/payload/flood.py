#!/usr/bin/env python3
"""A supervised child for the system tests: COUNT numbered lines as fast as it can, then ticks.

Usage: flood.py NAME COUNT [GO_FILE]. Waits for GO_FILE to exist if one is given, writes
`NAME line 0` .. `NAME line COUNT-1` to stdout in 64 KiB writes, records COUNT in
/run/NAME.written, then prints a numbered `NAME tick K` every 0.25 s forever: journald's rate
limiter reports what it suppressed only when a later message of the same priority arrives.
"""

import itertools
import os
import sys
import time

NAME = sys.argv[1]
COUNT = int(sys.argv[2])
GO_FILE = sys.argv[3] if len(sys.argv) > 3 else None
while GO_FILE is not None and not os.path.exists(GO_FILE):
    time.sleep(0.01)
with open(sys.stdout.fileno(), "w", buffering=1 << 16, closefd=False) as out:
    for number in range(COUNT):
        out.write(f"{NAME} line {number}\n")
    out.flush()
    with open(f"/run/{NAME}.written", "w") as record:
        record.write(f"{COUNT}\n")
    for tick in itertools.count():
        time.sleep(0.25)
        out.write(f"{NAME} tick {tick}\n")
        out.flush()
