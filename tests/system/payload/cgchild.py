#!/usr/bin/env python3
"""A worker for the cgroup tests: records its cgroup as its very first action.

Usage: cgchild.py NAME [--daemon] [--ignore-term]
  --daemon       start a grandchild the classic way (fork, setsid, fork), which ignores SIGTERM
  --ignore-term  ignore SIGTERM itself (only SIGKILL stops it)
"""

import os
import signal
import sys

with open("/proc/self/cgroup") as f:
    OWN = next(line.strip() for line in f if line.startswith("0::"))
NAME = sys.argv[1]
LOG = "/run/cg.log"


def record(what: str) -> None:
    with open(LOG, "a") as f:
        f.write(f"{what} {NAME} {os.environ.get('CIRCUS_WID', '?')} {os.getpid()} {OWN}\n")


record("start")
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if "--daemon" in sys.argv and os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        record("daemon")
        while True:
            signal.pause()
    os._exit(0)
while True:
    signal.pause()
