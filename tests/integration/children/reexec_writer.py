"""A worker that writes numbered lines to stdout, for the re-execution test.

Run as `python3 -S -E reexec_writer.py OUTDIR NAME WID [RATE]`: RATE lines a second, or as fast
as it can without RATE (behind its schedule, after its pipe was full, it writes as fast as it
can until it catches up). Line SEQ reads `NAME WID SEQ PAYLOAD` (SEQ in decimal, PAYLOAD `p` *
(40 + SEQ % 61)), so that a reader can check each line by content.
Lines go out in 4093-byte writes that cut them anywhere, as a program's buffered output does;
a full pipe blocks the writer (the arbiter reads at its own pace). On SIGTERM it ends the batch
in progress, so that its last line is whole, appends how many lines it wrote to
OUTDIR/NAME.WID.sent and exits 0.
"""

import os
import signal
import sys
import time

BATCH = 256
CHUNK = 4093


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    outdir, name, wid = sys.argv[1:4]
    rate = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    head = f"{name} {wid} ".encode()
    seq = 0
    started = time.monotonic()
    while not stopping:
        batch = b"".join(
            b"%s%d %s\n" % (head, n, b"p" * (40 + n % 61)) for n in range(seq, seq + BATCH)
        )
        seq += BATCH
        # The handler only sets a flag: an interrupted write is resumed (PEP 475).
        for start in range(0, len(batch), CHUNK):
            write_all(1, batch[start : start + CHUNK])
        if rate and (delay := started + seq / rate - time.monotonic()) > 0:
            time.sleep(delay)  # a batch's time at most: a SIGTERM waits that long
    fd = os.open(os.path.join(outdir, f"{name}.{wid}.sent"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, b"%d\n" % seq)
    os.close(fd)


if __name__ == "__main__":
    main()
