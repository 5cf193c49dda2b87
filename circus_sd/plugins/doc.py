"""The README's plugin option tables, generated from the plugins' option declarations
(`python -m circus_sd.plugins.doc --write README.md`; a test keeps them in sync)."""

from __future__ import annotations

import dataclasses
import pathlib
import signal
import sys
from typing import Any

from circus_sd.config.options import Option, option_of, signal_number
from circus_sd.plugins.autoscale import AutoscaleOptions
from circus_sd.plugins.prometheus import PrometheusOptions
from circus_sd.plugins.resource_watcher import ResourceWatcherOptions
from circus_sd.plugins.statsd import StatsdOptions
from circus_sd.plugins.watchdog import WatchDogOptions

# (heading, options): the order of the README.
PLUGINS: list[tuple[str, type]] = [
    ("`use = autoscale`", AutoscaleOptions),
    ("`use = resource_watcher` (Circus: `circus.plugins.resource_watcher.ResourceWatcher`)",
     ResourceWatcherOptions),
    ("`use = watchdog` (Circus: `circus.plugins.watchdog.WatchDog`)", WatchDogOptions),
    ("`use = statsd` / `use = full_stats` (Circus: `circus.plugins.statsd.StatsdEmitter` / "
     "`FullStats`)", StatsdOptions),
    ("`use = prometheus`", PrometheusOptions),
]


def _default_text(declared: Option, value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if declared.parse is signal_number:
        return signal.Signals(value).name
    if isinstance(value, float):
        return f"{value:g}"
    return f"`{value}`" if isinstance(value, str) else str(value)


def option_table(cls: type) -> str:
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for field in dataclasses.fields(cls):
        declared = option_of(field)
        if declared is not None:
            rows.append(
                f"| `{declared.key}` | {_default_text(declared, field.default)} | {declared.doc} |"
            )
    return "\n".join(rows)


def tables() -> str:
    return "\n\n".join(f"#### {heading}\n\n{option_table(cls)}" for heading, cls in PLUGINS) + "\n"


BEGIN = "<!-- plugin-options:begin"
END = "<!-- plugin-options:end -->"


def replace_tables(text: str) -> str:
    """`text` (the README) with the generated tables between its plugin option markers."""
    start = text.index("\n", text.index(BEGIN)) + 1
    return text[:start] + tables() + text[text.index(END) :]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        path = pathlib.Path(sys.argv[2])
        path.write_text(replace_tables(path.read_text()))
    else:
        print(tables(), end="")
