#!/usr/bin/env python3
"""A supervised child for the system tests: says who it is on stdout and stderr, then waits.

Usage: speaker.py NAME. Prints, on stdout then on stderr, a plain line and one with the
sd-daemon(3) prefix `<3>` (error), each carrying the worker id and the process's pid:
`NAME out wid=1 pid=123`, `<3>NAME out-alarm wid=1 pid=123`, then the same with `err`.
"""

import os
import signal
import sys

NAME = sys.argv[1] if len(sys.argv) > 1 else "speaker"
WHO = f"wid={os.environ.get('CIRCUS_WID', '?')} pid={os.getpid()}"
for stream, label in ((sys.stdout, "out"), (sys.stderr, "err")):
    print(f"{NAME} {label} {WHO}", file=stream, flush=True)
    print(f"<3>{NAME} {label}-alarm {WHO}", file=stream, flush=True)
while True:
    signal.pause()
