"""A worker with a process tree, for stop_children: `tree.py OUTDIR NAME WID WORKER DESCENDANT`.

The worker forks a child; the child forks a grandchild that moves to its own session (so it is
outside the worker's process group). When SIGTERM reaches one of the three, it appends
"TERM <role> <pid>" to OUTDIR/NAME.term, takes WORKER (or DESCENDANT) seconds to shut down, appends
"done <role> <pid>" and exits. The worker does not forward signals. Once the whole tree is set
up, the worker writes OUTDIR/NAME.WID.json with every pid.
"""

import json
import os
import signal
import sys
import time

ROLE = "worker"


def record(what: str) -> None:
    fd = os.open(TERM_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{what} {ROLE} {os.getpid()}\n".encode())
    os.close(fd)


def on_term(signum: int, frame: object) -> None:
    record("TERM")
    time.sleep(LINGER[ROLE != "worker"])
    record("done")
    os._exit(0)


def wait_forever() -> None:
    while True:
        signal.pause()


outdir, name, wid = sys.argv[1:4]
LINGER = (float(sys.argv[4]), float(sys.argv[5]))
TERM_LOG = os.path.join(outdir, f"{name}.term")
signal.signal(signal.SIGTERM, on_term)
ready_read, ready_write = os.pipe()
if os.fork() == 0:
    ROLE = "child"
    if os.fork() == 0:
        ROLE = "grandchild"
        os.setsid()
        os.write(ready_write, f"{os.getpid()}\n".encode())
        wait_forever()
    os.write(ready_write, f"{os.getpid()}\n".encode())
    wait_forever()
os.close(ready_write)
descendants: list[int] = []
buffer = b""
while len(descendants) < 2:
    chunk = os.read(ready_read, 64)
    if not chunk:
        sys.exit("tree.py: a descendant died before it was ready")
    buffer += chunk
    *lines, rest = buffer.split(b"\n")
    buffer = rest
    descendants += [int(line) for line in lines]
report = {"pid": os.getpid(), "descendants": sorted(descendants)}
final = os.path.join(outdir, f"{name}.{wid}.json")
with open(final + ".tmp", "w") as f:
    json.dump(report, f)
os.replace(final + ".tmp", final)
wait_forever()
