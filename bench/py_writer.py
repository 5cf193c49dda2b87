"""A Python log writer for the log workloads: bench-child's `write` mode, as a Python program.

    python -m bench.py_writer SOCK LINES PER_WRITE

Announces itself on the harness's socket like bench-child ("A pid ns"), waits for "g", writes
LINES lines of 100 bytes ("<pid:7> <seq:10> xxx...\\n", the same lines bench-child writes) to
stdout, PER_WRITE lines per `os.write` (80: 8,000 bytes, more than PIPE_BUF, as a Python program
with a buffered stdout writes), then says "D pid ns" and waits until the harness closes the socket.
Issue 18: the log path must keep up with the writers users run, not only with the C child.
"""

from __future__ import annotations

import os
import socket
import sys
import time

LINE_BYTES = 100
_FILL = LINE_BYTES - 1 - len("0000000 0000000000 ")


def _say(conn: socket.socket, kind: str) -> None:
    conn.send(f"{kind} {os.getpid()} {time.monotonic_ns()}".encode())


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def write_lines(lines: int, per_write: int) -> None:
    # One C-level %-format per write: the writers should cost little next to the supervisor.
    line = b"%07d " % os.getpid() + b"%010d " + b"x" * _FILL + b"\n"
    batch = line * per_write
    for first in range(0, lines, per_write):
        last = min(first + per_write, lines)
        fmt = batch if last - first == per_write else line * (last - first)
        _write_all(fmt % tuple(range(first, last)))


def main(argv: list[str]) -> int:
    sock, lines, per_write = argv[0], int(argv[1]), int(argv[2])
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.connect(sock)
    _say(conn, "A")
    if conn.recv(1) != b"g":
        return 0
    write_lines(lines, per_write)
    _say(conn, "D")
    while conn.recv(1):  # until the harness closes the connection
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
