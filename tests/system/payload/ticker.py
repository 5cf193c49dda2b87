#!/usr/bin/env python3
"""A supervised child for the system tests: prints a numbered line every 10 ms, forever."""

import itertools
import sys
import time

NAME = sys.argv[1] if len(sys.argv) > 1 else "ticker"
for number in itertools.count():
    print(f"{NAME} tick {number}", flush=True)
    time.sleep(0.01)
