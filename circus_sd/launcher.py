"""Spawning and the life of a child until its exit is known: what a process holds, whether its
exec succeeded, its pidfd, its sd_notify socket. It reports spawned / failed / exited; what
follows is the watchers' decision."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from circus_sd.actions import Spawn
from circus_sd.adoption import (
    ARBITER_ENV,
    WATCHER_ENV,
    Adoptable,
    Found,
    open_if_same,
    started_wall,
)
from circus_sd.cgroup_supervision import CgroupSupervision
from circus_sd.child_notify import NotifySocket, NotifySockets
from circus_sd.config.model import WatcherConfig
from circus_sd.config.process_env import ChildDefaults
from circus_sd.endpoints import runtime_dir
from circus_sd.fd_reserve import FdReserve
from circus_sd.fd_watch import FdWatch
from circus_sd.journal_log import about
from circus_sd.leftovers import Leftovers
from circus_sd.message_ids import MessageId
from circus_sd.output.router import OutputRouter, ProcessOutput
from circus_sd.paced import Paced
from circus_sd.process import ProcessHandle, reap_strays
from circus_sd.process_table import ExecPhase, ProcessEntry, ProcessTable
from circus_sd.sockets import ListeningSockets, SocketError
from circus_sd.spawn_plan import SpawnPlanError, build_request, socket_layout, with_accounts
from circus_sd.spawner import Spawner, SpawnerLost, SpawnError

if TYPE_CHECKING:
    from circus_sd.handover import CarriedProcess

log = logging.getLogger("circus_sd")


class LaunchReports(Protocol):
    """What the launcher tells the arbiter, which passes it on to the watcher concerned."""

    def on_spawned(self, watcher: str, batch: list[tuple[int, int]]) -> None:
        """These (spawn id, pid) exec'd their programs."""

    def on_spawn_failed(
        self, watcher: str, spawn_id: int, reason: str, code: int | None, spawner_lost: bool
    ) -> None:
        """The spawn made no process. `code`: an errno of ours or the spawner's (a shortage);
        `spawner_lost`: the spawner was lost before it answered."""

    def on_exited(self, watcher: str, pid: int, exit_code: int, exec_error: str | None) -> None:
        """The process is gone (and forgotten), its leaf empty where cgroups are on."""

    def on_notified(self, watcher: str, pid: int, message: dict[str, str]) -> None:
        """An sd_notify message from the process."""

    def on_orphans_reaped(self) -> None:
        """Children of ours that no watcher owned were reaped: theirs may be ours now."""

    def is_stopping(self, watcher: str, pid: int) -> bool:
        """Whether the watcher is stopping this process (its leaf is then killed at exit)."""

    def is_watched(self, watcher: str) -> bool:
        """Whether the watcher still exists (a spawn answered after its removal is killed)."""


@dataclasses.dataclass
class _Pending:
    """What a process being spawned holds until its pid is known; closed if the spawn fails."""

    notify: NotifySocket | None = None
    output: ProcessOutput | None = None

    def discard(self) -> None:
        if self.notify is not None:
            self.notify.close()
        if self.output is not None:
            self.output.discard()


class Launcher:
    def __init__(
        self,
        spawner: Spawner,
        output: OutputRouter,
        sockets: ListeningSockets,
        cgroups: CgroupSupervision | None,
        leftovers: Leftovers | None,
        defaults: ChildDefaults,
        reports: LaunchReports,
    ) -> None:
        self.spawner = spawner
        self.table = ProcessTable()
        self._output = output
        self._sockets = sockets
        self._cgroups = cgroups
        self._leftovers = leftovers
        self._defaults = defaults
        self._reports = reports
        self._notify_sockets = NotifySockets(runtime_dir())
        self._fd_reserve = FdReserve()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Every child's pidfd, exec-status pipe and sd_notify socket.
        self._fds = FdWatch()
        # What each process being spawned holds, by (watcher, spawn id).
        self._pending: dict[tuple[str, int], _Pending] = {}
        # Spawn answers whose _on_spawned has not run yet: the spawner no longer counts them in
        # flight, but their children are not in the table either (see reap_strays).
        self._unclaimed = 0
        self._strays_pending = False
        self._stray_looks = Paced(self.reap_strays)
        # Children whose exec succeeded this loop turn, told to their watchers at its end.
        self._execed_batch: list[int] = []
        # Called with the pid of each process forgotten (caches kept elsewhere by pid).
        self.forgotten: list[Callable[[int], None]] = []
        # Children of ours that whoever started them waits for (a re-execution's check).
        self.helpers: set[int] = set()
        # Marks every child carries (adoption.py): whose it is, for a next arbiter to find.
        self.identity = ""
        # Workers a previous arbiter left, taken by the first spawn of their wid.
        self.adoptable = Adoptable({})

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._fds.attach(loop)
        self._stray_looks.attach(loop)
        self.spawner.attach(loop)

    # -- spawning --------------------------------------------------------------------------------

    def spawn(self, config: WatcherConfig, action: Spawn) -> None:
        assert self._loop is not None
        name = config.name
        refusal = self._fd_reserve.refusal()
        if refusal is not None:
            # Short of descriptors, as if a pipe had failed with EMFILE: a shortage, not a failure.
            self._loop.call_soon(self._failed, name, action.spawn_id, refusal, errno.EMFILE)
            return
        found = self.adoptable.claim(name, action.wid)
        if found is not None and self._adopt(config, action, found):
            return
        pending = self._pending[(name, action.spawn_id)] = _Pending()
        extra_env = {WATCHER_ENV: name, ARBITER_ENV: self.identity}
        try:
            # The notify socket is made for the processes' user: a name the file gave before
            # the account existed is looked up first.
            config = with_accounts(config)
            if config.notify:
                notify = self._notify_sockets.open(name, action.wid, config.uid, config.gid)
                pending.notify = notify
                extra_env["NOTIFY_SOCKET"] = notify.path
            output = pending.output = self._output.prepare(config, action.wid)
            cgroup = (
                self._cgroups.prepare(name, action.wid, action.spawn_id) if self._cgroups else None
            )
            layout = socket_layout(config, self._sockets.names())
            socket_fds, own_sockets = self._sockets.for_process([n for n, _fd in layout])
            request = build_request(
                config,
                action.wid,
                self._defaults,
                extra_env,
                [*output.fd_targets, *(fd for _name, fd in layout)],
                output.journal_streams,
                cgroup=cgroup,
                sockets=layout,
            )
        except (SpawnPlanError, SocketError, OSError) as exc:
            # Answer on the next turn, like a real spawn, so this batch of actions finishes first.
            code = exc.errno if isinstance(exc, OSError) else None
            self._loop.call_soon(self._failed, name, action.spawn_id, str(exc), code)
            return
        future = self.spawner.spawn(request, [*output.child_fds, *socket_fds])
        for sock in own_sockets:
            sock.close()  # the spawner holds its copy; so_reuseport ones are the child's alone
        self._unclaimed += 1
        output.sent()
        future.add_done_callback(functools.partial(self._on_spawned, name, action.spawn_id))

    def _adopt(self, config: WatcherConfig, action: Spawn, found: Found) -> bool:
        """Take the worker a previous arbiter left for this wid as this spawn's process; False
        if it is gone, or cannot be supervised as it is (then stopped)."""
        assert self._loop is not None
        name, pid = config.name, found.pid
        if config.notify and config.watchdog_sec > 0:
            # Its pings go to the previous arbiter's socket: its watchdog would misfire.
            self.adoptable.stop(found, "its sd_notify watchdog cannot be taken over")
            return False
        pidfd = open_if_same(found)
        if pidfd is None:  # gone since it was found
            return False
        entry = ProcessEntry(
            pid, name, action.spawn_id, ProcessHandle.adopt(pid, pidfd),
            started_wall(found.started), phase=ExecPhase.EXECED,
        )
        self.table.add(entry)
        self._fds.add(pidfd, self._on_exit, pid)
        if self._leftovers is not None:
            self._leftovers.session_started(pid, name)
        if self._cgroups is not None and found.cgroup is not None:
            self._cgroups.adopt_leaf(name, pid, found.cgroup)
        self._loop.call_soon(self._reports.on_spawned, name, [(action.spawn_id, pid)])
        if config.awaits_readiness:
            # Its READY=1 or ready line went to the previous arbiter: it has run since then.
            self._loop.call_soon(self._reports.on_notified, name, pid, {"READY": "1"})
        log.info(
            "%s: took over pid %d (wid %d), left running by a previous arbiter",
            name, pid, action.wid, extra=about(MessageId.PROCESS_ADOPTED, name, action.wid, pid),
        )
        return True

    def _failed(
        self,
        name: str,
        spawn_id: int,
        reason: str,
        code: int | None = None,
        spawner_lost: bool = False,
    ) -> None:
        pending = self._pending.pop((name, spawn_id), None)
        if pending is not None:
            pending.discard()
        if self._cgroups is not None:
            self._cgroups.discard(name, spawn_id)
        self._reports.on_spawn_failed(name, spawn_id, reason, code, spawner_lost)

    def _on_spawned(
        self, name: str, spawn_id: int, future: asyncio.Future[tuple[int, int]]
    ) -> None:
        assert self._loop is not None
        self._unclaimed -= 1
        try:
            pid, status_fd = future.result()
        except SpawnError as exc:
            lost = isinstance(exc, SpawnerLost)
            self._failed(name, spawn_id, f"spawn: {exc.strerror or exc}", exc.errno, lost)
            return
        try:
            handle = ProcessHandle(pid, status_fd)
        except OSError as exc:
            # No pidfd (EMFILE): a child we cannot watch is killed; it is still our unreaped
            # child, so its pid cannot have been reused. reap_strays collects it.
            os.close(status_fd)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._failed(name, spawn_id, f"spawn: {exc.strerror or exc}", exc.errno)
            return
        pending = self._pending.pop((name, spawn_id), _Pending())
        entry = ProcessEntry(pid, name, spawn_id, handle, time.time(), pending.notify)
        self.table.add(entry)
        if self._leftovers is not None:
            self._leftovers.session_started(pid, name)  # it calls setsid: its session is its pid
        self._fds.add(handle.pidfd, self._on_exit, pid)
        if entry.notify is not None:
            self._fds.add(entry.notify.fileno(), self._on_notify, pid)
        if pending.output is not None:
            pending.output.attach(pid)
        if self._cgroups is not None:
            self._cgroups.claimed(name, spawn_id, pid)
        if not self._reports.is_watched(name):
            entry.phase = ExecPhase.EXECED  # no one to tell
            handle.send_signal(signal.SIGKILL, tree=True)
        # The watcher hears of it once exec succeeded (_on_status): a process "exists" for
        # status, READY=1 and the spawn event only as the program it was started for. This
        # also means nothing signals it before exec, while it still is a copy of the spawner.
        # A batch is answered after its last clone: its first children have often exec'd by
        # now, and their status pipes need no round through the loop.
        if handle.drain_status():
            self._status_done(entry)
        else:
            self._fds.add(status_fd, self._on_status, pid)
        if self._strays_pending and not self.spawns_unsettled():
            self.reap_strays()

    def _on_status(self, pid: int) -> None:
        entry = self.table.get(pid)
        if entry is not None and entry.handle.drain_status():
            assert entry.handle.status_fd is not None
            self._fds.remove(entry.handle.status_fd)
            self._status_done(entry)

    def _status_done(self, entry: ProcessEntry) -> None:
        """The exec-status pipe is at EOF: exec succeeded, or the child said why it did not."""
        assert self._loop is not None
        # Exec failed: keep what the child said until its exit is reaped.
        if not entry.handle.exec_error():
            entry.handle.close_status()
            # The children of a batch exec together: their watchers hear of them in one go.
            if not self._execed_batch:
                self._loop.call_soon(self._execed_all)
            self._execed_batch.append(entry.pid)

    def _execed_all(self) -> None:
        pids, self._execed_batch = self._execed_batch, []
        self.confirm_exec(*pids)

    def is_cloned(self, pid: int) -> bool:
        """Spawned, and not known to have exec'd its program yet."""
        entry = self.table.get(pid)
        return entry is not None and entry.phase is ExecPhase.CLONED

    def confirm_exec(self, *pids: int) -> None:
        """The processes exec'd their programs (only the program can talk, or write the output
        a ready_log_line matches): their watchers hear of those not told already."""
        batches: dict[str, list[tuple[int, int]]] = {}
        for pid in pids:
            entry = self.table.get(pid)
            if entry is None or entry.phase is not ExecPhase.CLONED:
                continue
            entry.phase = ExecPhase.EXECED
            batches.setdefault(entry.watcher, []).append((entry.spawn_id, pid))
        for name, batch in batches.items():
            self._reports.on_spawned(name, batch)

    def _on_notify(self, pid: int) -> None:
        entry = self.table.get(pid)
        if entry is None or entry.notify is None:
            return
        self.confirm_exec(pid)
        for message in entry.notify.receive():
            self._reports.on_notified(entry.watcher, pid, message)

    # -- exits -----------------------------------------------------------------------------------

    def _on_exit(self, pid: int) -> None:
        entry = self.table.get(pid)
        if entry is None:
            return
        exit_code = entry.handle.reap()
        if exit_code is None:
            return
        exec_error = entry.handle.exec_error()
        if entry.phase is ExecPhase.CLONED:
            if exec_error is not None:
                # Never became its program: a failed spawn, not a process that exited.
                if self._cgroups is not None:
                    self._cgroups.main_exited(pid, stopping=False)
                self.forget(pid)
                # No errno: what the child says of its own setup or exec is a failed start,
                # never a shortage (its rlimits, identity and cwd applied: restart_policy).
                self._reports.on_spawn_failed(
                    entry.watcher, entry.spawn_id, exec_error, None, False
                )
                return
            self.confirm_exec(pid)  # exec'd, then exited before we read its status pipe
        stopping = self._reports.is_stopping(entry.watcher, pid)
        if self._cgroups is not None and self._cgroups.main_exited(pid, stopping):
            # Descendants remain in its leaf: the process ends when the leaf is empty.
            self._fds.remove(entry.handle.pidfd)
            entry.phase = ExecPhase.DRAINING
            entry.exit_code, entry.exec_error = exit_code, exec_error
            return
        self._finish(entry, exit_code, exec_error)

    def leaf_empty(self, pid: int) -> None:
        """The cgroup leaf of a process whose main pid was reaped is empty: it is gone."""
        entry = self.table.get(pid)
        if entry is not None and entry.phase is ExecPhase.DRAINING:
            assert entry.exit_code is not None
            self._finish(entry, entry.exit_code, entry.exec_error)

    def _finish(self, entry: ProcessEntry, exit_code: int, exec_error: str | None) -> None:
        self.forget(entry.pid)
        # Its children, if any are left, are ours now.
        self._reports.on_orphans_reaped()
        self._reports.on_exited(entry.watcher, entry.pid, exit_code, exec_error)

    def forget(self, pid: int) -> ProcessEntry | None:
        """Let go of a process: its record, and the descriptors it held."""
        entry = self.table.remove(pid)
        if entry is None:
            return None
        if entry.notify is not None:
            self._fds.remove(entry.notify.fileno())
            entry.notify.close()
        handle = entry.handle
        self._fds.remove(handle.pidfd)
        if handle.status_fd is not None:
            self._fds.remove(handle.status_fd)
        handle.close()
        for forget in self.forgotten:
            forget(pid)
        return entry

    # -- signals ---------------------------------------------------------------------------------

    def deliver(self, pid: int, signum: int, tree: bool = False) -> None:
        entry = self.table.get(pid)
        if entry is None:
            return
        # With cgroups the leaf is exact (cgroup.kill for SIGKILL), and it may be all that is left
        # of a process whose main pid was already reaped.
        exact = entry.phase is ExecPhase.DRAINING or tree
        if exact and self._cgroups is not None and self._cgroups.signal(pid, signum, tree=True):
            return
        entry.handle.send_signal(signum, tree=tree)

    # -- strays ----------------------------------------------------------------------------------

    def spawns_unsettled(self) -> bool:
        return bool(self.spawner.in_flight or self._unclaimed)

    def known_pids(self) -> set[int]:
        """Our children that are accounted for: processes in the table, and the spawner."""
        return set(self.table.pids()) | set(self.spawner.pids) | self.helpers

    def reap_strays_soon(self) -> None:
        """After a SIGCHLD: reap strays, paced (each look reads the list of all our children;
        once per signal made a mass stop quadratic)."""
        self._stray_looks.request()

    def reap_strays(self) -> None:
        # Children cloned by the spawner are ours before we learn their pid: reaping an unknown
        # zombie now could steal a fresh child's status, so wait for the spawner's answers, and
        # for _on_spawned to take each in (a future's callbacks run a loop turn after it is set).
        if self.spawns_unsettled():
            self._strays_pending = True
            return
        self._strays_pending = False
        # The spawner's processes are its handle's to reap (it replaces a lost one).
        reaped = False
        for pid, status in reap_strays(self.known_pids()):
            log.debug("reaped orphan %d (status %d)", pid, status,
                      extra=about(MessageId.ORPHAN_REAPED, pid=pid))
            reaped = True
        if reaped:
            self._reports.on_orphans_reaped()

    # -- re-execution ----------------------------------------------------------------------------

    def settled(self) -> bool:
        """No spawn in flight, and every child known to run its program (or draining): what a
        re-execution waits for, so that no clone or exec-status pipe is in between."""
        return not (self.spawns_unsettled() or self._pending) and all(
            entry.phase is not ExecPhase.CLONED for entry in self.table
        )

    def hold(self) -> None:
        """Stop listening to the children (exits, sd_notify): from now on, what happens to them
        waits in their pidfds and sockets for the next program of this arbiter."""
        for entry in self.table:
            self._fds.remove(entry.handle.pidfd)
            if entry.notify is not None:
                self._fds.remove(entry.notify.fileno())

    @property
    def defaults(self) -> ChildDefaults:
        return self._defaults

    def carry(self, inherit: bool = True) -> list[CarriedProcess]:
        """Every child; with `inherit`, its descriptors are left open across execve."""
        from circus_sd.handover import CarriedProcess

        carried = []
        for entry in self.table:
            notify_fd = notify_path = None
            if entry.notify is not None:
                notify_fd, notify_path = entry.notify.fileno(), entry.notify.path
            if inherit:
                os.set_inheritable(entry.handle.pidfd, True)
                if notify_fd is not None:
                    os.set_inheritable(notify_fd, True)
            carried.append(CarriedProcess(
                entry.pid, entry.watcher, entry.spawn_id, entry.handle.pidfd,
                entry.started_wall, entry.phase.value, entry.exit_code, entry.exec_error,
                notify_fd, notify_path,
            ))
        return carried

    def notify_directory(self) -> tuple[str | None, int]:
        return self._notify_sockets.directory, self._notify_sockets.count

    def resume(
        self, carried: list[CarriedProcess], notify_directory: tuple[str | None, int]
    ) -> None:
        """Take back the children a previous program of this arbiter had; an exit that came
        meanwhile waits in its pidfd and is reaped on the loop's first turn."""
        assert self._loop is not None
        self._notify_sockets.adopt(*notify_directory)
        for record in carried:
            handle = ProcessHandle.adopt(record.pid, record.pidfd)
            notify = None
            if record.notify_fd is not None and record.notify_path is not None:
                notify = NotifySocket.adopt(record.notify_fd, record.notify_path)
            entry = ProcessEntry(
                record.pid, record.watcher, record.spawn_id, handle, record.started_wall,
                notify, ExecPhase(record.phase), record.exit_code, record.exec_error,
            )
            self.table.add(entry)
            if entry.phase is not ExecPhase.DRAINING:
                self._fds.add(handle.pidfd, self._on_exit, entry.pid)
            if notify is not None:
                self._fds.add(notify.fileno(), self._on_notify, entry.pid)

    def close(self) -> None:
        """Last: every record forgotten, the notify sockets' directory removed."""
        for entry in self.table:
            self.forget(entry.pid)
        self._fds.close()
        self._notify_sockets.close()

