"""A worker that keeps its stdout pipe full until the pipe is TARGET bytes big, then says so.

Run as `python3 -S -E pipe_filler.py OUTDIR NAME WID TARGET LINES`. Writes numbered lines
(writer.py's format, so that a reader can check each by content) in non-blocking writes of at
most PIPE_BUF bytes, each all or nothing: whenever the pipe is full it waits for room, and checks
the pipe's size. Once the size reaches TARGET, or after LINES lines, it stops writing and writes
"LINES_WRITTEN CAPACITY" to OUTDIR/NAME.WID.capacity, then sleeps until stopped.
"""

import fcntl
import os
import select
import signal
import sys
import time

F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
PIPE_BUF = 4096


def line(name: str, wid: str, seq: int) -> bytes:
    return b"%s %s out %08d %s\n" % (name.encode(), wid.encode(), seq, b"p" * (seq * 7 % 91))


def main() -> None:
    outdir, name, wid, target, lines = sys.argv[1:6]
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    os.set_blocking(1, False)
    capacity = fcntl.fcntl(1, F_GETPIPE_SZ)
    seq = 0
    while seq < int(lines) and capacity < int(target):
        chunk, count = b"", 0
        while seq + count < int(lines):
            more = line(name, wid, seq + count)
            if len(chunk) + len(more) > PIPE_BUF:
                break
            chunk, count = chunk + more, count + 1
        try:
            os.write(1, chunk)
        except BlockingIOError:
            select.select([], [1], [])
            capacity = fcntl.fcntl(1, F_GETPIPE_SZ)
            continue
        seq += count
    capacity = fcntl.fcntl(1, F_GETPIPE_SZ)
    with open(os.path.join(outdir, f"{name}.{wid}.capacity"), "w") as f:
        f.write(f"{seq} {capacity}")
    while True:
        time.sleep(3600)


main()
