"""The README's plugin option tables, generated from the plugins' option declarations
(`python -m circus_sd.plugins.doc --write README.md`; a test keeps them in sync)."""

from __future__ import annotations

import signal
import sys
from typing import Any

from circus_sd.config.doc import option_table, replace_section, run
from circus_sd.plugins.autoscale import AutoscaleOptions
from circus_sd.plugins.prometheus import PrometheusOptions
from circus_sd.plugins.resource_watcher import ResourceWatcherOptions
from circus_sd.plugins.statsd import StatsdOptions
from circus_sd.plugins.watchdog import WatchDogOptions

# (heading, options): the order of the README.
PLUGINS: list[tuple[str, type]] = [
    ("`use = autoscale`", AutoscaleOptions),
    (
        "`use = resource_watcher` (Circus: `circus.plugins.resource_watcher.ResourceWatcher`)",
        ResourceWatcherOptions,
    ),
    ("`use = watchdog` (Circus: `circus.plugins.watchdog.WatchDog`)", WatchDogOptions),
    (
        "`use = statsd` / `use = full_stats` (Circus: `circus.plugins.statsd.StatsdEmitter` / "
        "`FullStats`)",
        StatsdOptions,
    ),
    ("`use = prometheus`", PrometheusOptions),
]


def _default_text(name: str, value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if name.endswith("signal") and isinstance(value, int):
        return signal.Signals(value).name
    if isinstance(value, float):
        return f"{value:g}"
    return f"`{value}`" if isinstance(value, str) else str(value)


def tables() -> str:
    return (
        "\n\n".join(
            f"#### {heading}\n\n{option_table(cls, _default_text)}" for heading, cls in PLUGINS
        )
        + "\n"
    )


BEGIN = "<!-- plugin-options:begin"
END = "<!-- plugin-options:end -->"


def replace_tables(text: str) -> str:
    """`text` (the README) with the generated tables between its plugin option markers."""
    return replace_section(text, BEGIN, END, tables())


if __name__ == "__main__":
    run(sys.argv[1:], tables, replace_tables)
