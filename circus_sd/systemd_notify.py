"""The arbiter's sd_notify side: READY, STATUS, RELOADING, STOPPING, watchdog pings.

Inert unless systemd gave us a NOTIFY_SOCKET. The environment variables that describe our own
relation to systemd are removed from os.environ here, so no child ever inherits them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import sdnotify

log = logging.getLogger("circus_sd.systemd")

_OWN_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class SystemdNotifier:
    """One per arbiter; every method is a no-op outside systemd."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        self.watchdog_interval = _watchdog_interval(env)
        self._last_status = ""
        self._watchdog: asyncio.TimerHandle | None = None
        # Kept to give them back to the next program of this arbiter (a re-execution).
        self.own_variables = {n: env[n] for n in _OWN_VARIABLES if n in env}
        for name in _OWN_VARIABLES:
            env.pop(name, None)

    def _send(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)

    def ready(self, status: str) -> None:
        self._last_status = status
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self._send(f"STATUS={status}")

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\nSTATUS=reloading")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")

    def extend_timeout(self, seconds: float) -> None:
        """Ask systemd for `seconds` more (stop timeout) while graceful stops are running."""
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def start_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ping at half the interval from the event loop itself: a wedged loop stops pinging."""
        if self._notifier is None or self.watchdog_interval is None:
            return
        period = self.watchdog_interval / 2

        def ping() -> None:
            self._send("WATCHDOG=1")
            self._watchdog = loop.call_later(period, ping)

        log.info("systemd watchdog: pinging every %.1f s", period)
        ping()

    def watchdog_ping(self) -> None:
        """One ping now (the last before a re-execution's execve)."""
        if self.watchdog_interval is not None:
            self._send("WATCHDOG=1")

    def stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None
