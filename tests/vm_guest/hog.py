"""Allocates memory until something stops it (the memory_max check)."""

import time

hoard = []
while True:
    hoard.append(bytearray(8 << 20))
    time.sleep(0.01)
