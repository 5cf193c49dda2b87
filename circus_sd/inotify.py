"""A minimal inotify binding: cgroupfs reports `cgroup.events` and `memory.events` changes as
IN_MODIFY, which is how the arbiter learns that a process's cgroup emptied without polling."""

from __future__ import annotations

import ctypes
import os
import struct

IN_MODIFY = 0x00000002
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then `len` bytes of name)

_libc = ctypes.CDLL(None, use_errno=True)


class Inotify:
    """One inotify instance; `fd` goes into the event loop, `read()` drains it."""

    def __init__(self) -> None:
        fd = int(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        self.fd = fd

    def add_watch(self, path: str, mask: int = IN_MODIFY) -> int:
        wd = int(_libc.inotify_add_watch(self.fd, os.fsencode(path), mask))
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
        return wd

    def remove_watch(self, wd: int) -> None:
        # Fails harmlessly when the watched file is already gone (its directory removed).
        _libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[int]:
        """The watch descriptors with events since the last read (each once)."""
        wds: list[int] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return wds
            offset = 0
            while offset < len(data):
                wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                if wd not in wds:
                    wds.append(wd)

    def close(self) -> None:
        os.close(self.fd)
