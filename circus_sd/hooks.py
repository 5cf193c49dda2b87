"""Circus's hooks, run at the arbiter's edge: in a worker thread (or awaited) with a deadline.

A hook is called as Circus calls it, `hook(watcher=, arbiter=, hook_name=, **kwargs)`, but gets
small snapshot objects instead of the live watcher and arbiter. A synchronous hook runs in a
thread of its own, so however long it takes, the event loop goes on; past `hook_timeout` it
counts as failed and the thread is left to finish alone. An `async def` hook is awaited on the
loop with the same deadline (it must not block). The hooks of one watcher run one at a time, in
the order they were due; different watchers' hooks run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

from circus_sd.client import AsyncCircusClient, CircusClient
from circus_sd.config.model import HookImportError, HookSpec
from circus_sd.journal_log import about
from circus_sd.message_ids import MessageId
from circus_sd.signal_mask import handled_signals_blocked

log = logging.getLogger("circus_sd")

T = TypeVar("T")
Publish = Callable[[str, str, dict[str, Any]], None]

# Circus's process status for a reaped process (circus.process.UNEXISTING), given to after_reap.
PROCESS_GONE = 2
# Hooks whose failure Circus ignores (its Watcher.ignore_hook_failure; results are not used).
FAILURE_IGNORED = frozenset(
    {
        "before_stop",
        "after_stop",
        "before_signal",
        "after_signal",
        "before_reap",
        "after_reap",
        "extended_stats",
    }
)


@dataclasses.dataclass(frozen=True)
class WatcherView:
    """What a hook sees of a watcher, taken when the hook was due: never the live object."""

    name: str
    options: Mapping[str, Any]
    pids: tuple[int, ...]
    numprocesses: int
    state: str


class ArbiterView:
    """What a hook sees of the arbiter: the watchers' names and clients of its control socket.

    `client` (blocking, for plain hooks) and `async_client` (for `async def` hooks) are made on
    first use and closed after the hook returns. A hook that waits for a command on its own
    watcher waits behind the operation that called it: send those with `cast`.
    """

    def __init__(self, watchers: Sequence[str], endpoint: str | None) -> None:
        self.watchers = tuple(watchers)
        self.endpoint = endpoint
        self._client: CircusClient | None = None
        self._async_client: AsyncCircusClient | None = None

    @property
    def client(self) -> CircusClient:
        if self._client is None:
            self._client = CircusClient(self.endpoint)
        return self._client

    @property
    def async_client(self) -> AsyncCircusClient:
        if self._async_client is None:
            self._async_client = AsyncCircusClient(self.endpoint)
        return self._async_client

    def close(self) -> None:
        for client in (self._client, self._async_client):
            if client is not None:
                client.close()
        self._client = self._async_client = None


@dataclasses.dataclass(frozen=True)
class HookOutcome:
    """How a hook call ended. `approved`: it did not say no (return False) and did not fail,
    or its failure does not count (`ignore_errors`, or a hook Circus ignores failures of)."""

    approved: bool
    value: Any = None
    error: str | None = None


class HookFailed(Exception):
    """A hook raised something that is not an Exception (SystemExit...): never let it through."""


def _is_async(function: Callable[..., Any]) -> bool:
    # A callable object whose __call__ is `async def` counts too.
    method = type(function).__dict__.get("__call__")
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(method)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return  # timed out: nobody waits any more
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _in_thread(
    function: Callable[..., Any], kwargs: dict[str, Any], name: str
) -> asyncio.Future[Any]:
    """Call `function(**kwargs)` in a new daemon thread; its result as a future of this loop.

    A thread per call, not a pool: a hook that never returns must not keep later ones waiting
    for a free worker, nor keep the arbiter from exiting.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def run() -> None:
        try:
            ok, value = True, function(**kwargs)
        except Exception as exc:
            ok, value = False, exc
        except BaseException as exc:
            ok, value = False, HookFailed(f"raised {type(exc).__name__}: {exc}")
        with contextlib.suppress(RuntimeError):  # the loop is closed: the arbiter is gone
            loop.call_soon_threadsafe(_settle, future, ok, value)

    with handled_signals_blocked():
        threading.Thread(target=run, name=name, daemon=True).start()
    return future


class HookRunner:
    """Runs the arbiter's hook calls and reports them (`hook_success`/`hook_failure`, logs)."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._tails: dict[str, asyncio.Future[Any]] = {}
        self._resolved: dict[str, Callable[..., Any]] = {}

    def queue(self, watcher: str, job: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Run `job` once the watcher's earlier jobs are done: its hooks keep their order."""
        previous = self._tails.get(watcher)

        async def after_previous() -> T:
            if previous is not None:
                await asyncio.wait([previous])
            return await job()

        task: asyncio.Future[T] = asyncio.ensure_future(after_previous())
        self._tails[watcher] = task

        def forget(done: asyncio.Future[T]) -> None:
            if self._tails.get(watcher) is done:
                del self._tails[watcher]

        task.add_done_callback(forget)
        return task

    @property
    def busy(self) -> bool:
        """Hooks are running or queued."""
        return bool(self._tails)

    async def drain(self, timeout: float) -> None:
        """Wait (at most `timeout` s) for the hooks already due, e.g. after_stop at shutdown."""
        pending = list(self._tails.values())
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    def _resolve(self, spec: HookSpec, search_path: Sequence[str]) -> Callable[..., Any]:
        function = self._resolved.get(spec.target)
        if function is None:
            function = self._resolved[spec.target] = spec.resolve(search_path)
        return function

    def forget_imports(self) -> None:
        """A reload may name other callables: look them up again (modules stay imported)."""
        self._resolved.clear()

    async def call(
        self,
        spec: HookSpec,
        hook: str,
        kwargs: Mapping[str, Any],
        timeout: float,
        watcher: WatcherView,
        arbiter: ArbiterView,
        search_path: Sequence[str] = (),
    ) -> HookOutcome:
        """Call one hook now (callers queue it first when order matters) and report how it went."""
        label = f"{watcher.name}: hook {hook} ({spec.target})"
        ignored = spec.ignore_errors or hook in FAILURE_IGNORED
        arguments = {"watcher": watcher, "arbiter": arbiter, "hook_name": hook, **kwargs}
        # A thread that timed out may still use its client: then it is left to it.
        abandoned = False
        try:
            function = self._resolve(spec, search_path)
            threaded = not _is_async(function)
            async with asyncio.timeout(timeout):
                if threaded:
                    value = await _in_thread(function, arguments, f"hook {watcher.name} {hook}")
                    if inspect.isawaitable(value):  # e.g. a partial of an async function
                        value = await value
                else:
                    value = await function(**arguments)
        except TimeoutError:
            abandoned = threaded
            error = f"did not return within {timeout:g} s (hook_timeout): counted as failed"
            return self._failed(watcher.name, hook, label, error, ignored, None)
        except asyncio.CancelledError:
            raise
        except HookImportError as exc:
            return self._failed(watcher.name, hook, label, str(exc), ignored, None)
        except BaseException as exc:  # a hook's own exception, whatever it is, is its failure
            error = f"{type(exc).__name__}: {exc}"
            return self._failed(watcher.name, hook, label, error, ignored, exc)
        finally:
            if not abandoned:
                arbiter.close()
        self._publish(watcher.name, "hook_success", {"name": hook})
        log.debug("%s returned %r", label, value,
                  extra=about(MessageId.HOOK_RETURNED, watcher.name))
        return HookOutcome(approved=value is not False, value=value)

    def _failed(
        self,
        watcher: str,
        hook: str,
        label: str,
        error: str,
        ignored: bool,
        exc: BaseException | None,
    ) -> HookOutcome:
        self._publish(watcher, "hook_failure", {"name": hook, "error": error})
        suffix = " (failure ignored)" if ignored else ""
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
        log.error("%s failed: %s%s", label, error, suffix, exc_info=exc_info,
                  extra=about(MessageId.HOOK_FAILED, watcher))
        return HookOutcome(approved=ignored, error=error)


def watcher_view(
    name: str, options: Mapping[str, Any], pids: Sequence[int], numprocesses: int, state: str
) -> WatcherView:
    return WatcherView(name, MappingProxyType(dict(options)), tuple(pids), numprocesses, state)
