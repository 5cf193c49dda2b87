"""A watcher's hooks as the arbiter calls them: gates the watcher asked for, and the hooks around
signals, reaps and `stats --extended`, each queued behind the watcher's earlier hooks."""

from __future__ import annotations

import asyncio
import copy
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from circus_sd.actions import CallHook
from circus_sd.config.option_view import option_values
from circus_sd.hooks import (
    PROCESS_GONE,
    ArbiterView,
    HookOutcome,
    HookRunner,
    WatcherView,
    watcher_view,
)
from circus_sd.journal_log import about
from circus_sd.message_ids import MessageId
from circus_sd.watcher import Watcher

log = logging.getLogger("circus_sd")


class WatcherHooks:
    def __init__(
        self,
        runner: HookRunner,
        arbiter_view: Callable[[], ArbiterView],
        search_path: Callable[[Watcher], list[str]],
    ) -> None:
        self.runner = runner
        self._arbiter_view = arbiter_view
        self._search_path = search_path

    @staticmethod
    def view(watcher: Watcher) -> WatcherView:
        """What a hook sees of the watcher: a snapshot taken when the hook is due."""
        return watcher_view(
            watcher.name,
            option_values(watcher.config),
            watcher.pids,
            watcher.config.target_processes,
            watcher.state.circus_status,
        )

    async def run(
        self, watcher: Watcher, hook: str, arguments: dict[str, Any], view: WatcherView
    ) -> HookOutcome:
        """Call `hook` if the watcher (still) has it; a missing hook approves."""
        spec = watcher.config.hooks.get(hook)
        if spec is None:
            return HookOutcome(approved=True)
        return await self.runner.call(
            spec,
            hook,
            arguments,
            watcher.config.hook_timeout,
            view,
            self._arbiter_view(),
            self._search_path(watcher),
        )

    def gate(self, watcher: Watcher, action: CallHook, answer: Callable[[bool], None]) -> None:
        """A hook the watcher asked for, queued behind its earlier hooks; a gate's outcome (the
        action has a token) is given to `answer`."""
        view = self.view(watcher)
        arguments = dict(action.kwargs)
        future = self.runner.queue(
            watcher.name, lambda: self.run(watcher, action.hook, arguments, view)
        )
        if action.token is None:
            return

        def answered(done: asyncio.Future[HookOutcome]) -> None:
            if not done.cancelled():
                answer(done.exception() is None and done.result().approved)

        future.add_done_callback(answered)

    def around_signal(
        self, watcher: Watcher, pid: int, signum: int, deliver: Callable[[], None]
    ) -> None:
        """`deliver` the signal between the watcher's before_signal and after_signal hooks.

        before_signal returning False keeps the signal from being sent, as in Circus; SIGKILL is
        never held back, nor delayed, by a hook.
        """
        if not {"before_signal", "after_signal"} & set(watcher.config.hooks):
            deliver()
            return
        if signum == signal.SIGKILL:
            deliver()
        view = self.view(watcher)
        arguments = {"pid": pid, "signum": signum}

        async def around_the_signal() -> None:
            outcome = await self.run(watcher, "before_signal", arguments, view)
            if signum != signal.SIGKILL:
                if outcome.approved:
                    deliver()
                else:
                    log.info(
                        "%s: the before_signal hook said no: signal %d not sent to pid %d",
                        watcher.name, signum, pid,
                        extra=about(MessageId.SIGNAL_REFUSED, watcher.name, pid=pid),
                    )
            await self.run(watcher, "after_signal", arguments, view)

        self.runner.queue(watcher.name, around_the_signal)

    def around_reap(self, watcher: Watcher, pid: int, exit_code: int) -> None:
        """before_reap and after_reap, queued before the watcher decides what follows the exit
        (so that, e.g., after_stop comes after them). They never delay a respawn."""
        if not {"before_reap", "after_reap"} & set(watcher.config.hooks):
            return
        view = self.view(watcher)
        reaped_at = time.time()

        async def reap_hooks() -> None:
            arguments: dict[str, Any] = {"process_pid": pid, "time": reaped_at}
            await self.run(watcher, "before_reap", arguments, view)
            arguments.update(exit_code=exit_code, process_status=PROCESS_GONE)
            await self.run(watcher, "after_reap", arguments, view)

        self.runner.queue(watcher.name, reap_hooks)

    async def extended_stats(self, watcher: Watcher, pid: int, stats: Any) -> Any:
        """Circus's `extended_stats` hook: it may add to a process's `stats --extended`."""
        if "extended_stats" not in watcher.config.hooks:
            return stats
        mine = copy.deepcopy(stats)  # a hook that times out may still write into it
        outcome = await self.run(
            watcher, "extended_stats", {"pid": pid, "stats": mine}, self.view(watcher)
        )
        return mine if outcome.error is None else stats
