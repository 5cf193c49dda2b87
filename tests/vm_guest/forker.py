"""Forks until fork fails, records how many and why (the pids_max check)."""

import os
import time

forked = 0
while True:
    try:
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
        forked += 1
    except OSError as exc:
        # Whole or absent: the test reads it as soon as the name exists.
        with open("/run/forker.log.tmp", "w") as f:
            f.write(f"{forked} {exc.errno}")
        os.rename("/run/forker.log.tmp", "/run/forker.log")
        time.sleep(600)
