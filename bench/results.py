"""Figures of one run: samples per metric and supervisor, the table, the JSON and the plot."""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable
from typing import Any

SUBJECTS = ("circus-sd", "circus", "supervisord")
PEERS = ("circus", "supervisord")
MACHINE = "machine"
SECTIONS = ("machine.", "spawn.daemon", "spawn.first", "spawn.command", "stop.", "respawn",
            "idle.", "control.", "log.machine", "log.")


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool = False
    # The machine-limit metric this one is compared with (circus-sd ÷ machine).
    machine_key: str | None = None
    digits: int = 3


@dataclasses.dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    count: int


def summarize(samples: list[float]) -> Summary | None:
    if not samples:
        return None
    return Summary(statistics.median(samples), min(samples), max(samples), len(samples))


class Results:
    """Samples keyed by metric, then by subject (a supervisor, or "machine")."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.metrics: dict[str, Metric] = {}
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.notes: dict[str, dict[str, str]] = {}
        self.extra: dict[str, Any] = {}

    def define(self, metric: Metric) -> Metric:
        self.metrics.setdefault(metric.key, metric)
        return self.metrics[metric.key]

    def add(self, metric: Metric, who: str, *values: float) -> None:
        self.define(metric)
        self.samples.setdefault(metric.key, {}).setdefault(who, []).extend(values)

    def note(self, metric: Metric, who: str, text: str) -> None:
        """Why a cell has no figure ("n/a (needs control)", an error); the first note stays."""
        self.define(metric)
        self.notes.setdefault(metric.key, {}).setdefault(who, text)

    def summary(self, key: str, who: str) -> Summary | None:
        return summarize(self.samples.get(key, {}).get(who, []))

    def ratio(
        self, key: str, who: str, against: str, against_key: str | None = None
    ) -> float | None:
        mine = self.summary(key, who)
        theirs = self.summary(against_key or key, against)
        if mine is None or theirs is None or theirs.median == 0:
            return None
        return mine.median / theirs.median

    # -- output ----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        figures = {}
        for key, metric in self.metrics.items():
            row: dict[str, Any] = {"label": metric.label, "unit": metric.unit,
                                   "higher_is_better": metric.higher_is_better,
                                   "machine_key": metric.machine_key}
            for who in (*SUBJECTS, MACHINE):
                samples = self.samples.get(key, {}).get(who)
                note = self.notes.get(key, {}).get(who)
                if samples:
                    s = summarize(samples)
                    assert s is not None
                    row[who] = {"median": s.median, "min": s.low, "max": s.high,
                                "samples": samples}
                elif note:
                    row[who] = {"note": note}
            ratios = {}
            for peer in PEERS:
                r = self.ratio(key, "circus-sd", peer)
                if r is not None:
                    ratios[f"circus-sd/{peer}"] = r
            if metric.machine_key:
                r = self.ratio(key, "circus-sd", MACHINE, metric.machine_key)
                if r is not None:
                    ratios["circus-sd/machine"] = r
            row["ratios"] = ratios
            figures[key] = row
        return {"meta": self.meta, "figures": figures, "extra": self.extra}

    def table(self, markdown: bool = False) -> str:
        head = ["figure", "circus-sd", "Circus", "supervisord", "machine",
                "sd/Circus", "sd/supd", "sd/machine"]
        rows = [head]
        for key in self.ordered_keys():
            metric = self.metrics[key]
            n = key.rsplit(".", 1)[-1]
            label = f"{metric.label}, N={n}" if n.isdigit() else metric.label
            row = [f"{label} [{metric.unit}]{' ↑' if metric.higher_is_better else ''}"]
            for who in (*SUBJECTS, MACHINE):
                row.append(self._cell(key, who, metric))
            for peer in PEERS:
                row.append(_ratio_text(self.ratio(key, "circus-sd", peer)))
            row.append(_ratio_text(
                self.ratio(key, "circus-sd", MACHINE, metric.machine_key)
                if metric.machine_key else None
            ))
            rows.append(row)
        if markdown:
            lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
            return "\n".join(lines)
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        out = []
        for index, r in enumerate(rows):
            out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(r, widths, strict=True))))
            if index == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(out)

    def ordered_keys(self) -> list[str]:
        """By section (in SECTIONS order), then in the order the figures were first met."""
        def section(key: str) -> int:
            return next((i for i, p in enumerate(SECTIONS) if key.startswith(p)), len(SECTIONS))

        return sorted(self.metrics, key=section)

    def _cell(self, key: str, who: str, metric: Metric) -> str:
        s = self.summary(key, who)
        if s is None:
            return self.notes.get(key, {}).get(who, "")
        fmt = _fmt(metric.digits)
        if s.count == 1 or s.low == s.high:
            return fmt(s.median)
        return f"{fmt(s.median)} [{fmt(s.low)}-{fmt(s.high)}]"


def _fmt(digits: int) -> Callable[[float], str]:
    def fmt(value: float) -> str:
        return f"{value:,.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"

    return fmt


def _ratio_text(r: float | None) -> str:
    if r is None:
        return ""
    if r == 0:
        return "0x"
    return f"{r:.2f}x" if r >= 0.01 else f"{r:.1e}x"


def plot(results: Results, path: str, ns: list[int]) -> bool:
    """Scaling curves over N (needs matplotlib and more than one N); returns True if written."""
    if len(ns) < 2:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [
        ("daemon start → N exist (s)", "spawn.daemon.{n}", "machine.burst.{n}"),
        ("`start` → N exist (s)", "spawn.command.{n}", "machine.burst.{n}"),
        ("SIGTERM → none remain (s, log scale)", "stop.reaped.{n}", "machine.burst_stop.{n}"),
        ("SIGTERM → daemon exit (s, log scale)", "stop.daemon_exit.{n}",
         "machine.burst_stop.{n}"),
        ("idle CPU (% of a core)", "idle.cpu.{n}", None),
        ("RSS, own processes (MB)", "idle.rss_sum.{n}", None),
    ]
    fig, grid = plt.subplots(2, 3, figsize=(13, 7.5))
    axes = list(grid.flat)
    for ax, (title, pattern, machine_pattern) in zip(axes, panels, strict=True):
        for who in SUBJECTS:
            xs, ys, lo, hi = [], [], [], []
            for n in ns:
                s = results.summary(pattern.format(n=n), who)
                if s is not None:
                    xs.append(n)
                    ys.append(s.median)
                    lo.append(s.median - s.low)
                    hi.append(s.high - s.median)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=who)
        if machine_pattern:
            found = [(n, results.summary(machine_pattern.format(n=n), MACHINE)) for n in ns]
            pts = [(n, s.median) for n, s in found if s is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), "k--", marker="x", label="machine")
        if "log scale" in title:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("N processes")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def load(path: str) -> Results:
    """A saved run back as Results (to print its table or plot it again)."""
    with open(path) as f:
        data = json.load(f)
    results = Results(data["meta"])
    results.extra = data.get("extra", {})
    for key, row in data["figures"].items():
        metric = Metric(key, row["label"], row["unit"], row["higher_is_better"],
                        row.get("machine_key", _older_machine_key(key)))
        results.define(metric)
        for who in (*SUBJECTS, MACHINE):
            cell = row.get(who) or {}
            if "samples" in cell:
                results.add(metric, who, *cell["samples"])
            elif "note" in cell:
                results.note(metric, who, cell["note"])
    return results


def _older_machine_key(key: str) -> str | None:
    """Files written before "machine_key" was saved: the pairs run.py used then."""
    kind, _, rest = key.partition(".")
    what, _, tail = rest.rpartition(".")
    if kind == "spawn" and what in ("daemon", "command"):
        return f"machine.burst.{tail}"
    if kind == "stop" and what in ("last_exit", "reaped", "daemon_exit"):
        return f"machine.burst_stop.{tail}"
    if kind == "log" and tail == "mbps":
        return f"log.machine_cat.{what}"
    return None


def dump(results: Results, path: str) -> None:
    with open(path, "w") as f:
        json.dump(results.to_json(), f, indent=1)
