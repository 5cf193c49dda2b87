"""A Type=notify-style child: READY=1 after a delay, then a number of WATCHDOG=1 pings.

Usage: notifier.py READY_AFTER PINGS PING_EVERY   (PINGS < 0: ping forever)
"""

import os
import socket
import sys
import time

ready_after, pings, every = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
address = os.environ["NOTIFY_SOCKET"]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
time.sleep(ready_after)
sock.sendto(b"READY=1\nSTATUS=serving", address)
sent = 0
while pings < 0 or sent < pings:
    time.sleep(every)
    sock.sendto(b"WATCHDOG=1", address)
    sent += 1
time.sleep(3600)
