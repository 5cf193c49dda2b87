"""A worker that makes load for the plugin tests: CPU while a flag file exists, or memory.

Run as `python3 -S -E load.py OUTDIR NAME WID [--burn-while FLAG] [--hog-wid N --hog-mib M]`.
With --burn-while it spins on the CPU whenever FLAG exists and idles otherwise (checking the
flag every 20 ms). With --hog-wid, the worker with that id holds M MiB of touched memory. Each
start appends `NAME WID PID` to OUTDIR/NAME.starts.
"""

import os
import signal
import sys
import time


def main() -> None:
    outdir, name, wid = sys.argv[1:4]
    options = sys.argv[4:]
    line = f"{name} {wid} {os.getpid()}\n".encode()
    fd = os.open(os.path.join(outdir, f"{name}.starts"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, line)
    os.close(fd)
    hoard = None
    if "--hog-wid" in options and options[options.index("--hog-wid") + 1] == wid:
        size = int(options[options.index("--hog-mib") + 1]) << 20
        hoard = bytearray(size)
        for offset in range(0, size, 4096):  # touch every page: resident, not just reserved
            hoard[offset] = 1
    if "--burn-while" in options:
        flag = options[options.index("--burn-while") + 1]
        while True:
            if os.path.exists(flag):
                until = time.monotonic() + 0.05
                while time.monotonic() < until:
                    pass
            else:
                time.sleep(0.02)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
