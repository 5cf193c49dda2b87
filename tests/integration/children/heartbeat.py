"""A worker that sends Circus's watchdog heartbeats: `PID;TIMESTAMP` over UDP every 0.1 s.

Run as `python3 -S -E heartbeat.py OUTDIR NAME WID PORT` (to 127.0.0.1:PORT).
"""

import os
import socket
import sys
import time


def main() -> None:
    port = int(sys.argv[4])
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while True:
        sender.sendto(f"{os.getpid()};{time.time()}".encode(), ("127.0.0.1", port))
        time.sleep(0.1)


if __name__ == "__main__":
    main()
