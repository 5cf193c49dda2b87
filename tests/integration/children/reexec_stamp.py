"""A worker that notes when it starts and when it is asked to stop, for the re-execution tests.

Run as `python3 -S -E reexec_stamp.py OUTDIR NAME WID MODE`. It first appends
`start PID MONOTONIC` to OUTDIR/NAME.stamps (CLOCK_MONOTONIC is the machine's: the test compares
it with its own). MODE:

- `fail-once`: the first process (no OUTDIR/NAME.failed yet) creates that file and exits 1 at
  once, a failed start; the next ones stay;
- `hold-term`: SIGTERM is noted as `term PID MONOTONIC` and otherwise ignored (only SIGKILL
  ends it).

Then it sleeps until it is killed.
"""

import os
import signal
import sys
import time


def note(path: str, what: str) -> None:
    # One write on an O_APPEND file: lines of concurrent processes do not interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{what} {os.getpid()} {time.monotonic():.6f}\n".encode())
    finally:
        os.close(fd)


def main() -> None:
    outdir, name, _wid, mode = sys.argv[1:5]
    stamps = os.path.join(outdir, f"{name}.stamps")
    if mode == "hold-term":
        signal.signal(signal.SIGTERM, lambda signum, frame: note(stamps, "term"))
    note(stamps, "start")
    if mode == "fail-once":
        try:
            os.close(os.open(os.path.join(outdir, f"{name}.failed"), os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
        else:
            sys.exit(1)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
