"""A worker that writes numbered lines to stdout at a steady rate, for the load and soak tests.

Run as `python3 -S -E firehose.py OUTDIR NAME WID BYTES_PER_SECOND`. Line SEQ reads
`NAME WID SEQ xxx...` (100 bytes with its newline); lines go out in writes of 64 KiB, paced to
the rate. On SIGTERM it finishes the write in progress (no line is cut), writes how many lines
it wrote to OUTDIR/NAME.WID.sent (appending, one number per process), and exits 0.
"""

import os
import signal
import sys
import time

LINE = 100
CHUNK_LINES = 655  # about 64 KiB per write


def main() -> None:
    outdir, name, wid, rate = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    head = f"{name} {wid} ".encode()
    seq = 0
    started = time.monotonic()
    while not stopping:
        lines = []
        for _ in range(CHUNK_LINES):
            text = head + b"%010d " % seq
            lines.append(text + b"x" * (LINE - len(text) - 1) + b"\n")
            seq += 1
        view = memoryview(b"".join(lines))
        while view:  # a signal interrupts a write only between whole writes
            view = view[os.write(1, view) :]
        # Paced in short sleeps, so that a SIGTERM is acted on soon even at a slow rate.
        while not stopping and (delay := started + seq * LINE / rate - time.monotonic()) > 0:
            time.sleep(min(delay, 0.1))
    fd = os.open(os.path.join(outdir, f"{name}.{wid}.sent"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, b"%d\n" % seq)
    os.close(fd)


if __name__ == "__main__":
    main()
