"""Our children that no watcher owns: orphans of workers (adopted as subreaper), clones of a
lost spawner, and whatever is left at exit. Which watcher an orphan belongs to is leftovers.py's
pure decision; this module signals, waits and kills."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Collection
from typing import Any

from circus_sd.config.model import WatcherConfig
from circus_sd.journal_log import about
from circus_sd.leftovers import Leftover, Leftovers, clones_of_a_lost_spawner
from circus_sd.message_ids import MessageId
from circus_sd.paced import Paced
from circus_sd.process import own_children

log = logging.getLogger("circus_sd")

# How long processes may take to vanish once SIGKILLed (unless stuck in the kernel: D state).
KILLED_WAIT = 5.0

Publish = Callable[[str, str, dict[str, Any]], None]


def describe_pid(pid: int) -> str:
    import psutil  # not at start: 11 ms and 0.8 MB of the arbiter, for a rare message

    try:
        return f"pid {pid} ({psutil.Process(pid).name()})"
    except psutil.Error:
        return f"pid {pid}"


class Orphans:
    """`workers`: the watchers' processes; `spawners`: the spawner's; `leftovers`: None where
    per-watcher cgroups hold every descendant instead."""

    def __init__(
        self,
        leftovers: Leftovers | None,
        workers: Callable[[], Collection[int]],
        spawners: Callable[[], Collection[int]],
        publish: Publish,
    ) -> None:
        self._leftovers = leftovers
        self._workers = workers
        self._spawners = spawners
        self._publish = publish
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scans = Paced(self.scan)
        # Futures of stops waiting for the attributed orphans to change (found, gone,
        # forgotten): each its own, all done at the next change.
        self._change_waiters: list[asyncio.Future[None]] = []
        # Stops waiting for a look at our children that starts after they asked.
        self._scan_waiters: list[asyncio.Future[None]] = []

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._scans.attach(loop)

    def unowned(self) -> set[int]:
        """Our children that are neither a watcher's processes nor spawners."""
        workers, spawners = self._workers(), self._spawners()
        return {pid for pid in own_children() if pid not in workers and pid not in spawners}

    # -- orphans of workers, without cgroups -----------------------------------------------------

    def scan_soon(self) -> None:
        """Look for workers' orphans once this loop turn is done (exits come in batches)."""
        if self._leftovers is not None:
            self._scans.request()

    def scan(self) -> None:
        """Attribute our children that are neither workers nor spawners to watchers, by the
        worker session they are in."""
        if self._leftovers is None or self._loop is None:
            return
        waiters, self._scan_waiters = self._scan_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        for leftover in self._leftovers.scan(self.unowned(), self._workers()):
            self._loop.add_reader(leftover.pidfd, self._exited, leftover.pid)
            log.info(
                "%s: %s was left behind by its process %d; it is stopped with the watcher",
                leftover.watcher, describe_pid(leftover.pid), leftover.session,
                extra=about(MessageId.ORPHAN_FOUND, leftover.watcher, pid=leftover.pid),
            )
            self._publish(
                leftover.watcher, "orphan", {"pid": leftover.pid, "session": leftover.session}
            )
            self._changed()

    def _exited(self, pid: int) -> None:
        assert self._leftovers is not None
        leftover = self._leftovers.get(pid)
        if leftover is not None:
            self._drop(leftover)
        self.scan_soon()  # its own children are ours now

    def _drop(self, leftover: Leftover) -> None:
        assert self._leftovers is not None
        if self._loop is not None:
            self._loop.remove_reader(leftover.pidfd)
        self._leftovers.gone(leftover.pid)
        self._changed()

    def _changed(self) -> None:
        waiters, self._change_waiters = self._change_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def forget_watcher(self, name: str) -> None:
        """A watcher removed: orphans of its workers are no longer its (a stop stopped them)."""
        if self._leftovers is None:
            return
        self._leftovers.forget_sessions(name)
        for leftover in self._leftovers.of(name):
            self._drop(leftover)

    async def stop(
        self, config: WatcherConfig, extend_timeout: Callable[[float], None] | None = None
    ) -> None:
        """Stop the orphans of a watcher's workers as its processes are stopped: its
        `stop_signal`, then SIGKILL after its `graceful_timeout`. Their own children, adopted
        as each exits, are stopped too. `extend_timeout`: asks systemd for the time it takes."""
        if self._leftovers is None:
            return
        assert self._loop is not None
        name = config.name
        # The orphans of its last processes are ours since they exited: a look from now on
        # finds them. Paced (paced.py), so that one look serves every watcher stopped meanwhile
        # (each reads the list of all our children: 100 watchers stopped together made 100).
        scanned = self._loop.create_future()
        self._scan_waiters.append(scanned)
        self._scans.request()
        await scanned
        if not self._leftovers.of(name):
            return
        if extend_timeout is not None:
            extend_timeout(config.graceful_timeout + KILLED_WAIT)
        signum = config.stop_signal
        deadline = self._loop.time() + config.graceful_timeout
        signalled: set[int] = set()
        while self._leftovers.pids(name):
            if signum != signal.SIGKILL and self._loop.time() >= deadline:
                signum, signalled = signal.SIGKILL, set()
                deadline = self._loop.time() + KILLED_WAIT
            changed = self._loop.create_future()
            self._change_waiters.append(changed)
            for leftover in self._leftovers.of(name):
                if leftover.pid in signalled:
                    continue
                signalled.add(leftover.pid)
                what = f"{name}: {describe_pid(leftover.pid)}, left behind by its process"
                subject = about(MessageId.ORPHAN_STOPPING, name, pid=leftover.pid)
                if signum == signal.SIGKILL and signum != config.stop_signal:
                    log.warning("%s %d, still running after graceful_timeout: SIGKILL",
                                what, leftover.session, extra=subject)
                else:
                    log.info("%s %d: stopping it", what, leftover.session, extra=subject)
                leftover.send_signal(signum)
            try:
                await asyncio.wait_for(changed, max(0.0, deadline - self._loop.time()))
            except TimeoutError:
                if signum == signal.SIGKILL:
                    log.error("%s: pids %s, left behind by its processes, survive SIGKILL",
                              name, sorted(self._leftovers.pids(name)),
                              extra=about(MessageId.ORPHAN_SURVIVES, name))
                    return

    # -- children of a lost spawner --------------------------------------------------------------

    def kill_lost_clones(self, since: float) -> None:
        """A lost spawner may have cloned children for requests it never answered: ours
        (CLONE_PARENT), of pids we never learned, they would run unsupervised beside the
        replacements their watchers spawn. Called by the spawner's handle once the lost spawner
        is gone and before the next one clones anything, after the answers received before the
        loss were taken in: our children that are neither known processes, nor spawners, nor
        attributed orphans, and that started since `since` in their own session (or still in
        ours, before their setsid) are those clones (leftovers.py).

        They are SIGKILLed, their process group with them (they lead it once past setsid), not
        adopted: they never became known workers, their watchers already count them as deferred
        spawns and ask for others, and whether they exec'd (their status pipe went with the
        spawner) or for which watcher (/proc/PID/environ holds the spawner's environment before
        exec, and may be unreadable or rewritten after) cannot be told reliably."""
        attributed = (
            {leftover.pid for leftover in self._leftovers.found()}
            if self._leftovers is not None
            else set()
        )
        candidates = [pid for pid in self.unowned() if pid not in attributed]
        for pid, leads_session in clones_of_a_lost_spawner(candidates, since, os.getsid(0)):
            log.warning(
                "killing %s: cloned by the lost spawner, its pid never answered", describe_pid(pid),
                extra=about(MessageId.ORPHAN_KILLED, pid=pid),
            )
            # Our unreaped child: its pid (and, once it leads one, its group's) is not reused.
            if leads_session:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # -- at exit ---------------------------------------------------------------------------------

    async def drain(self, grace: float, reap: Callable[[], None], exited: asyncio.Event) -> None:
        """Orphans left by stopped processes get SIGTERM and `grace` seconds, then whatever is
        left is for `kill_all`. `reap` reaps what exited; `exited` is set by SIGCHLD."""
        assert self._loop is not None
        deadline = self._loop.time() + grace
        signalled: set[int] = set()
        while True:
            exited.clear()
            reap()
            orphans = self.unowned()
            remaining = deadline - self._loop.time()
            if not orphans or remaining <= 0:
                return
            for pid in orphans - signalled:
                log.info("stopping %s, orphaned by a stopped process", describe_pid(pid),
                         extra=about(MessageId.ORPHAN_STOPPING, pid=pid))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            signalled |= orphans
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), remaining)

    def kill_all(self, watched: Callable[[int], bool]) -> None:
        """Last, once the spawner is gone: SIGKILL whatever is still our child, and reap it.
        `watched`: a watcher's process (killed without a word: its stop was logged)."""
        if self._leftovers is not None:
            for leftover in self._leftovers.found():
                self._drop(leftover)
        # A killed orphan's own children are re-parented to us as it dies: go again until none.
        for _round in range(20):
            left = own_children()
            if not left:
                break
            for pid in left:
                if not watched(pid):
                    log.info("killing %s, left after the stop", describe_pid(pid),
                             extra=about(MessageId.ORPHAN_KILLED, pid=pid))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in left:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
