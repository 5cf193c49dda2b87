"""The autoscale plugin: keeps a watcher between `min` and `max` processes from its load.

Every `loop_rate` seconds it measures the load signal, asks the Scaler (scaling.py) and carries
out a decision with `incr`/`decr`; each decision is logged and published as the event
`plugin.<name>.grow` or `plugin.<name>.shrink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Mapping

from circus_sd.config.options import integer, number, option, text
from circus_sd.config.plugin_options import (
    PluginOptionError,
    one_of,
    parse_options,
    positive_number,
    required,
)
from circus_sd.plugins.base import CommandFailed, Plugin
from circus_sd.plugins.load_signals import (
    AcceptQueue,
    CgroupPressure,
    CpuLoad,
    LoadSignal,
    SocketAddress,
)
from circus_sd.plugins.scaling import Decision, Move, ScalePolicy, Scaler


@dataclasses.dataclass(frozen=True)
class AutoscaleOptions:
    watcher: str = option(text, "", "The watcher to scale (required).")
    minimum: int = option(integer(0), 1, "Fewest processes.", key="min")
    maximum: int = option(integer(1), 4, "Most processes.", key="max")
    signal: str = option(
        one_of("cpu", "pressure", "queue"),
        "cpu",
        "Load signal: `cpu` (mean % of a core per process: the watcher's cgroup usage when it "
        "has one, else psutil, descendants included), `pressure` (the watcher cgroup's "
        "`cpu.pressure` some avg10, %), `queue` (connections waiting in `socket`'s accept queue).",
    )
    socket: str = option(
        text,
        "",
        "With `signal = queue`: `PORT`, `HOST:PORT` (TCP) or a `[socket:NAME]`'s name.",
    )
    grow_above: float = option(number(), 75.0, "Add processes when the load is above this.")
    shrink_below: float = option(
        number(), 25.0, "Remove processes when the load is below this (< `grow_above`)."
    )
    cooldown: float = option(number(), 30.0, "Seconds after a change before the next one.")
    step: int = option(integer(1), 1, "Processes added or removed per decision.")
    loop_rate: float = option(positive_number, 5.0, "Seconds between two measures.")

    def __post_init__(self) -> None:
        required(self.watcher, "watcher")
        if self.signal == "queue" and not self.socket.strip():
            raise PluginOptionError("socket", "required with signal = queue")
        try:
            self.policy()
        except ValueError as error:
            raise PluginOptionError(None, str(error)) from None

    def policy(self) -> ScalePolicy:
        return ScalePolicy(
            minimum=self.minimum,
            maximum=self.maximum,
            grow_above=self.grow_above,
            shrink_below=self.shrink_below,
            cooldown=self.cooldown,
            step=self.step,
        )


class Autoscale(Plugin):
    options_class = AutoscaleOptions
    topics = ()  # it measures; events would add nothing

    def configure(self, options: Mapping[str, str]) -> None:
        self.settings, _unknown = parse_options(AutoscaleOptions, options)
        self.scaler = Scaler(self.settings.policy())
        self.load_signal: LoadSignal | None = None
        self._said: str | None = None

    async def handle_init(self) -> None:
        self.load_signal = await self._make_signal()
        s = self.settings
        self.log.info(
            "scaling %s between %d and %d processes on %s (grow above %g, shrink below %g, "
            "cooldown %g s, every %g s)",
            s.watcher, s.minimum, s.maximum, s.signal, s.grow_above, s.shrink_below, s.cooldown,
            s.loop_rate,
        )
        # A first measure at once: CPU needs two to tell a rate.
        self.every(s.loop_rate, self.check, first=0.0)

    async def _make_signal(self) -> LoadSignal:
        if self.settings.signal == "pressure":
            return CgroupPressure()
        if self.settings.signal == "cpu":
            return CpuLoad()
        return AcceptQueue(await self._socket_address(self.settings.socket))

    async def _socket_address(self, text: str) -> SocketAddress:
        try:
            return SocketAddress.parse(text)
        except ValueError:
            pass
        # A [socket:NAME]: its address as the arbiter reports it.
        reply = await self.call("listsockets")
        for entry in reply.get("sockets") or []:
            if entry.get("name") == text and entry.get("port"):
                host = str(entry.get("host") or "")
                with contextlib.suppress(ValueError):
                    return SocketAddress.parse(f"[{host}]:{entry['port']}")
        raise PluginOptionError("socket", f"no TCP socket named {text!r} (listsockets)")

    def _say_once(self, message: str) -> None:
        """A problem that lasts is logged when it starts, not at every check."""
        if message != self._said:
            self._said = message
            self.log.warning("%s", message)

    async def check(self) -> None:
        watcher = self.settings.watcher
        try:
            status = await self.status(watcher)
        except CommandFailed as error:
            self._say_once(f"{watcher}: {error.reason}")
            return
        if status.state != "active":
            return  # starting, stopping, paused, stopped: not ours to resize now
        assert self.load_signal is not None
        now = asyncio.get_running_loop().time()
        load = self.load_signal.measure(status.pids, now)
        if load is None and status.pids and self.settings.signal != "cpu":
            self._say_once(f"{watcher}: no {self.settings.signal} signal to read (see README)")
        elif self._said is not None and load is not None:
            self._said = None
        decision = self.scaler.decide(now, status.numprocesses, load)
        if decision is not None:
            await self.apply(decision)

    async def apply(self, decision: Decision) -> None:
        watcher = self.settings.watcher
        command = "incr" if decision.move is Move.GROW else "decr"
        load = "not measured" if decision.load is None else f"{decision.load:.1f}"
        self.log.info(
            "%s: %s %d -> %d processes (%s: %s; %s)",
            watcher, decision.move.value, decision.current, decision.target,
            self.settings.signal, load, decision.reason,
        )
        reply = await self.call(command, name=watcher, nb=decision.delta, waiting=True)
        self.scaler.applied(asyncio.get_running_loop().time())
        if reply.get("singleton"):
            self._say_once(f"{watcher} is a singleton: it cannot be scaled")
            return
        await self.publish(
            decision.move.value,
            watcher=watcher,
            **{"from": decision.current, "to": decision.target},
            load=decision.load,
            signal=self.settings.signal,
            reason=decision.reason,
        )
