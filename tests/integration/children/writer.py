"""A worker that writes numbered lines to stdout (and stderr), then waits to be stopped.

Run as `python3 -S -E writer.py OUTDIR NAME WID [--lines N] [--rate LPS] [--stderr]
[--chunk BYTES] [--tail TEXT]`. Line SEQ of stream S reads `NAME WID S SEQ PAYLOAD`, where
PAYLOAD's length depends on SEQ (see `payload`), so a reader can check each line by content. At
full speed (no --rate) lines are written in `--chunk`-byte writes that cut lines anywhere, as a
real program's buffered output does. With --rate, lines trickle out (for rotations). When done,
it writes OUTDIR/NAME.WID.done and sleeps.
"""

import os
import signal
import sys
import time


def payload(seq: int) -> bytes:
    return b"p" * (seq * 7 % 91)


def line(name: str, wid: str, stream: str, seq: int) -> bytes:
    return b"%s %s %s %08d %s\n" % (name.encode(), wid.encode(), stream.encode(), seq, payload(seq))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    outdir, name, wid = sys.argv[1:4]
    args = sys.argv[4:]
    lines = int(args[args.index("--lines") + 1]) if "--lines" in args else 1000
    rate = float(args[args.index("--rate") + 1]) if "--rate" in args else 0.0
    chunk = int(args[args.index("--chunk") + 1]) if "--chunk" in args else 65536
    tail = args[args.index("--tail") + 1].encode() if "--tail" in args else b""
    streams = [("out", 1)] + ([("err", 2)] if "--stderr" in args else [])
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if rate:
        started = time.monotonic()
        for seq in range(lines):
            for stream, fd in streams:
                write_all(fd, line(name, wid, stream, seq))
            delay = started + (seq + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    else:
        for stream, fd in streams:
            data = b"".join(line(name, wid, stream, seq) for seq in range(lines))
            for start in range(0, len(data), chunk):
                write_all(fd, data[start : start + chunk])
    for _stream, fd in streams:
        write_all(fd, tail)
    with open(os.path.join(outdir, f"{name}.{wid}.done"), "w") as f:
        f.write("done")
    while True:
        time.sleep(3600)


main()
