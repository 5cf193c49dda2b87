"""A user's stream class, called as Circus calls it: `cls(**options)({"data", "pid", "name"})`."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from circus_sd.output.sink import Chunk, SinkError


def resolve_class(dotted: str) -> Callable[..., Any]:
    """`package.module.Class` imported; ImportError/AttributeError name what is missing."""
    module_name, _, attribute = dotted.rpartition(".")
    module = importlib.import_module(module_name)
    found = getattr(module, attribute)
    if not callable(found):
        raise TypeError(f"{dotted} is not a class")
    return found  # type: ignore[no-any-return]


class CustomWriter:
    """Calls the user's object from the writer thread, once per chunk of whole lines."""

    def __init__(self, dotted: str, options: Mapping[str, str]) -> None:
        self.dotted = dotted
        self.options = {key: value for key, value in options.items() if key != "class"}
        self.description = f"stream class {dotted}"
        self._instance: Any = None

    def write(self, batch: list[Chunk]) -> None:
        if self._instance is None:
            try:
                self._instance = resolve_class(self.dotted)(**self.options)
            except Exception as exc:
                raise SinkError(f"cannot create {self.dotted}: {exc!r}") from None
        written = 0
        for chunk in batch:
            data = {
                "data": b"".join(chunk.parts),
                "pid": chunk.origin.pid,
                "name": chunk.origin.stream,
            }
            try:
                self._instance(data)
            except Exception as exc:
                raise SinkError(f"{self.dotted} failed: {exc!r}", written) from None
            written += chunk.size

    def close(self) -> None:
        close = getattr(self._instance, "close", None)
        if callable(close):
            close()
