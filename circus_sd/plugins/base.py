"""The plugin API: a separate, supervised process that follows events and sends commands.

As in Circus, a plugin is a client of the arbiter, not code inside it: the arbiter runs each
active `[plugin:NAME]` as a singleton watcher `plugin:NAME` (`python -m circus_sd.plugins`), so
a plugin that crashes is restarted like any other process, and a plugin that hangs cannot stall
supervision. A plugin subclasses `Plugin` and overrides what it needs:

- `configure(options)`: parse the section's options (raise PluginOptionError when one is bad);
- `handle_init()` / `handle_stop()`: set up (timers with `every`, sockets) and tear down;
- `handle_event(topic, payload)`: every event of the topics in `topics` (by default the
  watchers' events, given to `handle_watcher_event` as a typed `WatcherEvent`);
- and uses `call` / `cast` to send commands, `publish` to publish its own events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, ClassVar

from circus_sd.client import (
    DEFAULT_TIMEOUT,
    AsyncCircusClient,
    AsyncSubscription,
    CallError,
    resolve_endpoint,
)
from circus_sd.endpoints import default_pubsub_endpoint
from circus_sd.systemd_notify import SystemdNotifier

# The event a plugin publishes to itself until it comes back: then its subscription receives.
SUBSCRIBED_EVENT = "subscribed"
SUBSCRIBE_DEADLINE = 5.0
PROBE_INTERVAL = 0.05


class CommandFailed(Exception):
    """The arbiter answered a command with an error reply."""

    def __init__(self, command: str, reply: Mapping[str, Any]) -> None:
        self.command = command
        self.reason = str(reply.get("reason") or "unknown error")
        self.errno = reply.get("errno")
        super().__init__(f"{command}: {self.reason}")


@dataclasses.dataclass(frozen=True)
class WatcherEvent:
    """An event on `watcher.<name>.<kind>`, with typed access to Circus's payload keys."""

    watcher: str
    kind: str
    payload: Mapping[str, Any]

    @classmethod
    def from_topic(cls, topic: str, payload: Mapping[str, Any]) -> WatcherEvent | None:
        if not topic.startswith("watcher."):
            return None
        # Watcher names may contain dots; event names do not.
        watcher, dot, kind = topic[len("watcher.") :].rpartition(".")
        if not dot or not watcher or not kind:
            return None
        return cls(watcher, kind, payload)

    def _integer(self, key: str) -> int | None:
        value = self.payload.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def pid(self) -> int | None:
        """`process_pid` of `spawn`, `reap` and `kill` events."""
        return self._integer("process_pid")

    @property
    def exit_code(self) -> int | None:
        """`reap`: the exit status, or -signal for a process killed by a signal."""
        return self._integer("exit_code")

    @property
    def time(self) -> float | None:
        value = self.payload.get("time")
        return float(value) if isinstance(value, int | float) else None


@dataclasses.dataclass(frozen=True)
class WatcherStatus:
    """One watcher as `status` details it."""

    name: str
    state: str
    pids: tuple[int, ...]
    numprocesses: int
    restarts: int
    reason: str | None

    @classmethod
    def from_details(cls, name: str, details: Mapping[str, Any]) -> WatcherStatus:
        return cls(
            name=name,
            state=str(details.get("state", "unknown")),
            pids=tuple(int(p) for p in details.get("pids") or ()),
            numprocesses=int(details.get("numprocesses") or 0),
            restarts=int(details.get("restarts") or 0),
            reason=details.get("reason") or None,
        )


class Timer:
    """A periodic call made by `Plugin.every`; `cancel()` stops it."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        self._task = task

    def cancel(self) -> None:
        self._task.cancel()

    @property
    def stopped(self) -> bool:
        return self._task.done()


class Plugin:
    """Base class of plugins; see the module's docstring. `run()` is what the runner awaits."""

    # Event topic prefixes to subscribe to; () = no subscription at all.
    topics: tuple[str, ...] = ("watcher.",)
    # The dataclass declaring the options (options.py): the loader checks sections against it.
    options_class: ClassVar[type | None] = None

    def __init__(
        self,
        name: str,
        options: Mapping[str, str],
        endpoint: str | None = None,
        pubsub_endpoint: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.name = name
        self.options = dict(options)
        self.endpoint = resolve_endpoint(endpoint)
        self.pubsub_endpoint = pubsub_endpoint or default_pubsub_endpoint()
        self.log = logging.getLogger(f"circus_sd.plugins.{name}")
        self.client = AsyncCircusClient(self.endpoint, timeout)
        # One request at a time on the client's socket: a reply is matched by whoever reads it.
        self._call_lock = asyncio.Lock()
        self._stop_requested: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.configure(self.options)

    # -- what a plugin overrides -------------------------------------------------------------------

    def configure(self, options: Mapping[str, str]) -> None:
        """Parse the options (called by the constructor); raise PluginOptionError if wrong."""

    async def handle_init(self) -> None:
        """Called once connected, before any event is handled: start timers here."""

    async def handle_stop(self) -> None:
        """Called when the plugin stops (SIGTERM), after its timers and event handling ended."""

    async def handle_event(self, topic: str, payload: dict[str, Any]) -> None:
        """Every event of `topics`, in order; by default a watcher event goes on, typed."""
        event = WatcherEvent.from_topic(topic, payload)
        if event is not None:
            await self.handle_watcher_event(event)

    async def handle_watcher_event(self, event: WatcherEvent) -> None:
        """A `watcher.<name>.<kind>` event (spawn, reap, kill, start, stop, flapping...)."""

    # -- talking to the arbiter --------------------------------------------------------------------

    async def call(self, command: str, **properties: Any) -> dict[str, Any]:
        """Send a command and return its reply; CommandFailed on an error reply, CallError
        (circus_sd.client) when no reply comes in time."""
        async with self._call_lock:
            reply = await self.client.call(command, **properties)
        if reply.get("status") == "error":
            raise CommandFailed(command, reply)
        return reply

    async def cast(self, command: str, **properties: Any) -> None:
        """Send a command without waiting for its reply (Circus's fire-and-forget)."""
        async with self._call_lock:
            await self.client.cast(command, **properties)

    async def publish(self, event: str, **data: Any) -> None:
        """Publish `plugin.<name>.<event>` with `data` (and the time) on the events socket."""
        await self.cast("publish", name=self.name, event=event, data=data)

    async def status(self, watcher: str) -> WatcherStatus:
        reply = await self.call("status", name=watcher, details=True)
        details = reply.get("details") or {}
        name, found = next(iter(details.items()), (watcher, {}))
        return WatcherStatus.from_details(name, found)

    async def statuses(self) -> dict[str, WatcherStatus]:
        reply = await self.call("status", details=True)
        details = reply.get("details") or {}
        return {name: WatcherStatus.from_details(name, d) for name, d in details.items()}

    # -- running -----------------------------------------------------------------------------------

    def every(
        self,
        seconds: float,
        function: Callable[[], Awaitable[None] | None],
        first: float | None = None,
    ) -> Timer:
        """Call `function` (plain or async) every `seconds`, the first time after `first`
        seconds (default: `seconds`). Calls never overlap; a late call skips missed ones, and a
        call that raises is logged and the timer goes on. From `handle_init` or later."""
        if seconds <= 0:
            raise ValueError("every: the period must be > 0")
        loop = asyncio.get_running_loop()
        label = getattr(function, "__qualname__", repr(function))

        async def tick() -> None:
            due = loop.time() + (seconds if first is None else first)
            while True:
                await asyncio.sleep(max(0.0, due - loop.time()))
                await self._guarded(label, function)
                due += seconds
                if due < loop.time():
                    due = loop.time() + seconds

        return Timer(self._start(tick()))

    def stop(self) -> None:
        """Ask `run()` to end (what SIGTERM does)."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def run(self) -> int:
        """Connect, `handle_init`, handle events and timers until stopped, `handle_stop`."""
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        subscription = None
        early: list[tuple[str, dict[str, Any]]] = []
        try:
            if self.topics:
                # Before handle_init: what happens while it runs is not missed.
                subscription = AsyncSubscription(
                    self.pubsub_endpoint, [*self.topics, self._probe_topic]
                )
                early = await self._subscribed(subscription)
            # The plugin's watcher has `notify`: the arbiter starts the watchers that come
            # after it (lower priority) once it listens, so their first spawns are seen. Said
            # before handle_init: a plugin slow or failing to set up holds no watcher back.
            SystemdNotifier().ready("listening" if subscription is not None else "running")
            await self.handle_init()
            if subscription is not None:
                self._start(self._pump(subscription, early))
            await self._stop_requested.wait()
            self.log.info("stopping")
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            try:
                await self.handle_stop()
            finally:
                if subscription is not None:
                    subscription.close()
                self.client.close()
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
        return 0

    def _start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def _probe_topic(self) -> str:
        return f"plugin.{self.name}.{SUBSCRIBED_EVENT}"

    async def _subscribed(
        self, subscription: AsyncSubscription
    ) -> list[tuple[str, dict[str, Any]]]:
        """Wait until the subscription receives (ZMQ drops what a SUB socket's connection was
        too young to receive): publish a probe until it comes back. The events received
        meanwhile are returned, to be handled first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SUBSCRIBE_DEADLINE
        early: list[tuple[str, dict[str, Any]]] = []
        while loop.time() < deadline:
            await self.cast("publish", name=self.name, event=SUBSCRIBED_EVENT, data={})
            wait_until = min(deadline, loop.time() + PROBE_INTERVAL)
            while (left := wait_until - loop.time()) > 0:
                try:
                    topic, payload = await asyncio.wait_for(subscription.receive(), left)
                except TimeoutError:
                    break
                if topic == self._probe_topic:
                    return early
                early.append((topic, payload))
        self.log.warning("events: no probe came back within %g s; going on", SUBSCRIBE_DEADLINE)
        return early

    async def _pump(
        self, subscription: AsyncSubscription, early: list[tuple[str, dict[str, Any]]]
    ) -> None:
        for topic, payload in early:
            await self._guarded(topic, functools.partial(self.handle_event, topic, payload))
        while True:
            topic, payload = await subscription.receive()
            if topic == self._probe_topic:
                continue  # a late copy of our own probe
            await self._guarded(topic, functools.partial(self.handle_event, topic, payload))

    async def _guarded(self, label: str, function: Callable[[], Awaitable[None] | None]) -> None:
        """Run a timer's function or an event's handler: what it raises is logged, no more."""
        try:
            result = function()
            if inspect.isawaitable(result):
                await result
        except (CommandFailed, CallError) as error:
            # The arbiter said no, or is not answering (it may be stopping): one line.
            self.log.warning("%s: %s", label, error)
        except Exception:
            self.log.exception("%s failed", label)
