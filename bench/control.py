"""Client-library access to a supervisor's control channel, the same four calls for each.

`status` is the cheapest round trip (Circus `status`, supervisord `getState`), `list` lists the
watcher's processes (Circus `list w`, supervisord `getAllProcessInfo`), `stats` is Circus's
per-process /proc report, `start` starts the watcher without waiting. circus-sd speaks Circus's
protocol, so Circus's own client library drives it.
"""

from __future__ import annotations

import http.client
import xmlrpc.client
from typing import Any, Protocol


class ControlError(Exception):
    """The call failed or timed out."""


class NotSupported(ControlError):
    """This supervisor has no such call."""


class ControlClient(Protocol):
    def status(self) -> None: ...

    def list(self) -> int: ...

    def stats(self) -> None: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


class CircusControl:
    def __init__(self, endpoint: str, watcher: str, timeout: float) -> None:
        from circus.client import CircusClient  # the peer's library, from the bench venv

        self._client = CircusClient(endpoint=endpoint, timeout=timeout)
        self._watcher = watcher

    def _call(self, command: str, **props: Any) -> dict[str, Any]:
        from circus.exc import CallError

        try:
            reply: dict[str, Any] = self._client.call({"command": command, "properties": props})
        except CallError as exc:
            raise ControlError(str(exc)) from exc
        if reply.get("status") != "ok":
            raise ControlError(f"{command}: {reply}")
        return reply

    def status(self) -> None:
        self._call("status")

    def list(self) -> int:
        return len(self._call("list", name=self._watcher)["pids"])

    def stats(self) -> None:
        self._call("stats", name=self._watcher)

    def start(self) -> None:
        self._call("start", name=self._watcher, waiting=False)

    def close(self) -> None:
        self._client.stop()


class SupervisorControl:
    def __init__(self, serverurl: str, group: str, timeout: float) -> None:
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, serverurl)
        self._timeout = timeout
        self._proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        self._group = group

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._proxy.supervisor, method)(*args)
        except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
            raise ControlError(f"{method}: {exc}") from exc

    def status(self) -> None:
        self._call("getState")

    def list(self) -> int:
        return len(self._call("getAllProcessInfo"))

    def stats(self) -> None:
        raise NotSupported("supervisord has no per-process stats call")

    def start(self) -> None:
        self._call("startProcessGroup", self._group, False)

    def close(self) -> None:
        pass


def make_client(kind: str, address: str, watcher: str, timeout: float) -> ControlClient:
    if kind == "circus":
        return CircusControl(address, watcher, timeout)
    return SupervisorControl(address, watcher, timeout)
