"""A worker that misbehaves on purpose, for the fault tests, then waits to be killed.

Run as `python3 -S -E faulty.py OUTDIR NAME WID MODE [ARG]`:

- `close-stdout`: writes a line to stdout, closes it, writes a line to stderr, closes that too;
- `no-newline`: writes text without any newline (flushed), and a tail at SIGTERM, then exits;
- `junk N`: writes N bytes of seeded binary junk (NUL, CR, invalid UTF-8, newlines...) to stdout.

When its misbehaviour is done it writes OUTDIR/NAME.WID.done holding its pid, then sleeps.
"""

import os
import random
import signal
import sys


def junk(size: int, seed: int) -> bytes:
    """The bytes `junk SIZE` writes, for seed `seed` (the test computes the same)."""
    rng = random.Random(seed)
    alphabet = bytes(range(256)) + b"\n" * 4 + b"\r\x00\xff\xfe"
    return bytes(rng.choice(alphabet) for _ in range(size))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    outdir, name, wid, mode = sys.argv[1:5]
    arg = sys.argv[5] if len(sys.argv) > 5 else ""
    if mode == "close-stdout":
        write_all(1, b"before the close\n")
        os.close(1)
        write_all(2, b"stdout is closed\n")
        os.close(2)
    elif mode == "no-newline":
        write_all(1, b"no newline here, ")
        write_all(1, b"nor here")

        def on_term(signum: int, frame: object) -> None:
            write_all(1, b", and a tail at exit")
            os._exit(0)

        signal.signal(signal.SIGTERM, on_term)
    elif mode == "junk":
        write_all(1, junk(int(arg), int(wid)))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    done = os.path.join(outdir, f"{name}.{wid}.done")
    with open(done + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(done + ".tmp", done)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
