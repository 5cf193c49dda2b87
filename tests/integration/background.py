"""A loop in a daemon thread, for the load and soak tests: started, stopped with a deadline, and
whatever it raised kept for the test's main thread to report."""

from __future__ import annotations

import threading


class Background:
    """Runs `loop(stop)` in a daemon thread until `stop()`; an exception ends up in `problems`."""

    def __init__(self, name: str) -> None:
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def loop(self, stop: threading.Event) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def ask_to_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the loop to end and wait for it; False if it is still running (stuck)."""
        self.ask_to_stop()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _main(self) -> None:
        try:
            self.loop(self._stop)
        except Exception as exc:  # reported by the test, in the main thread
            self.problems.append(f"{self._thread.name}: {type(exc).__name__}: {exc}")
