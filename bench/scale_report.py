"""`make bench-scale`'s figures: their rows, issue 18's targets at the largest N, table, plot."""

from __future__ import annotations

from typing import Any

from bench.results import MACHINE, SUBJECTS, Results

# (key, label, unit, the machine figure it is compared with)
MACHINE_FIGURES = (
    ("burst", "machine: burst posix_spawn → N exist", "s", None),
    ("burst_pp", "machine: burst posix_spawn, cost per process", "ms", None),
    ("burst_calls", "machine: N posix_spawn calls returned", "s", None),
    ("kill_reap", "machine: SIGTERM to N → all reaped", "s", None),
    ("kill_reap_pp", "machine: SIGTERM to N → all reaped, per process", "ms", None),
)
FIGURES = (
    ("start_cmd", "`start` command → N exist", "s", "burst"),
    ("start_cmd_pp", "`start` command, cost per process", "ms", "burst_pp"),
    ("start_daemon", "daemon start → N exist", "s", "burst"),
    ("start_daemon_pp", "daemon start, cost per process", "ms", "burst_pp"),
    ("status", "status via the client library (supervisord getState)", "ms", None),
    ("list", "list of a watcher via the client library (supervisord getAllProcessInfo)", "ms",
     None),
    ("stats", "stats of every process (supervisord getAllProcessInfo)", "ms", None),
    ("cpu", "idle CPU, own processes", "% core", None),
    ("rss_main", "RSS, main process", "MB", None),
    ("rss_sum", "RSS, own processes", "MB", None),
    ("pss_sum", "PSS, daemon + its own helpers", "MB", None),
    ("stop", "SIGTERM → daemon exit and all children reaped", "s", "kill_reap"),
    ("stop_last", "SIGTERM → last child exit", "s", "kill_reap"),
    ("tracebacks", "Python tracebacks in the daemon's output and log", "lines", None),
    ("exc_ignored", "\"Exception ignored\" lines", "lines", None),
    ("warnings", "warning lines", "lines", None),
)
SAME_COST = 1.25  # "the same cost per process": within 25 % of the smallest N's
WARNING_FLOOD = 10  # more warning lines than this in a daemon's two runs is a flood


def _median(results: Results, key: str, who: str = "circus-sd") -> float | None:
    s = results.summary(key, who)
    return None if s is None else s.median


def _cell(results: Results, key: str, who: str = "circus-sd") -> str:
    value = _median(results, key, who)
    if value is None:
        return "-"
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _why(results: Results, key: str) -> str:
    """Why circus-sd has no figure there: "not measured (gave up at N (phase, reason))"."""
    note = results.notes.get(key, {}).get("circus-sd", "")
    return "not measured" + (f" ({note[:110]})" if note else "")


def targets(results: Results) -> list[tuple[str, str, str]]:
    """Issue 18's targets for circus-sd at the largest N: (target, figure, met / missed)."""
    plan = results.meta["plan"]
    n = max(plan["ns"])
    base_n = min([*plan["ns"], plan["ref_n"] or n])
    out: list[tuple[str, str, str]] = []

    def verdict(ok: bool | None, key: str) -> str:
        return _why(results, key) if ok is None else "met" if ok else "**missed**"

    def add(target: str, key: str, test: float, limit: float | None, text: str) -> None:
        value = _median(results, key)
        ok = None if value is None or limit is None else value * test <= limit
        out.append((target, text, verdict(ok, key)))

    for shape in shape_keys(plan):
        tag = "" if shape == "1w" else f" ({shape_label(plan, shape)})"
        burst = _median(results, f"scale.machine.burst.{n}", MACHINE)
        start = _median(results, f"scale.start_cmd.{shape}.{n}")
        ratio = f" = {start / burst:.2f}x the burst" if start and burst else ""
        add(f"`start` of {n:,} within 2x the machine's burst{tag}", f"scale.start_cmd.{shape}.{n}",
            1, 2 * burst if burst else None,
            f"{_cell(results, f'scale.start_cmd.{shape}.{n}')} s against "
            f"{_cell(results, f'scale.machine.burst.{n}', MACHINE)} s{ratio}")
        first = _median(results, f"scale.start_cmd_pp.{shape}.{base_n}")
        last = _median(results, f"scale.start_cmd_pp.{shape}.{n}")
        if shape == "1w" or first is not None:
            ok = None if first is None or last is None else last <= SAME_COST * first
            out.append((f"the same cost per process from {base_n:,} to {n:,}{tag}",
                        f"{_cell(results, f'scale.start_cmd_pp.{shape}.{base_n}')} → "
                        f"{_cell(results, f'scale.start_cmd_pp.{shape}.{n}')} ms"
                        + (f" ({last / first:.2f}x; 'same' = within {SAME_COST:.2f}x)"
                           if first and last else ""),
                        verdict(ok, f"scale.start_cmd_pp.{shape}.{n}")))
        add(f"status < 1 ms{tag}", f"scale.status.{shape}.{n}", 1, 1.0,
            f"{_cell(results, f'scale.status.{shape}.{n}')} ms")
        add(f"list < 20 ms{tag}", f"scale.list.{shape}.{n}", 1, 20.0,
            f"{_cell(results, f'scale.list.{shape}.{n}')} ms")
        add(f"stats of every process < 1 s{tag}", f"scale.stats.{shape}.{n}", 1, 1000.0,
            f"{_cell(results, f'scale.stats.{shape}.{n}')} ms")
        reap = _median(results, f"scale.machine.kill_reap.{n}", MACHINE)
        stop = _median(results, f"scale.stop.{shape}.{n}")
        ratio = f" = {stop / reap:.2f}x" if stop and reap else ""
        add(f"SIGTERM → exit within 2x the machine's kill-and-reap{tag}",
            f"scale.stop.{shape}.{n}", 1, 2 * reap if reap else None,
            f"{_cell(results, f'scale.stop.{shape}.{n}')} s against "
            f"{_cell(results, f'scale.machine.kill_reap.{n}', MACHINE)} s{ratio}")
        add(f"RSS < 80 MB{tag}", f"scale.rss_main.{shape}.{n}", 1, 80.0,
            f"{_cell(results, f'scale.rss_main.{shape}.{n}')} MB (PSS with the spawner "
            f"{_cell(results, f'scale.pss_sum.{shape}.{n}')} MB)")
        add(f"idle CPU 0{tag}", f"scale.cpu.{shape}.{n}", 1, 0.01,
            f"{_cell(results, f'scale.cpu.{shape}.{n}')} % of a core ('0' = below 0.01 %)")
        tb = _median(results, f"scale.tracebacks.{shape}.{n}")
        ei = _median(results, f"scale.exc_ignored.{shape}.{n}")
        warn = _median(results, f"scale.warnings.{shape}.{n}")
        ok = None if tb is None or ei is None or warn is None else (
            tb == 0 and ei == 0 and warn <= WARNING_FLOOD)
        out.append((f"no traceback, no warning flood{tag}",
                    f"{_cell(results, f'scale.tracebacks.{shape}.{n}')} tracebacks, "
                    f"{_cell(results, f'scale.exc_ignored.{shape}.{n}')} 'Exception ignored', "
                    f"{_cell(results, f'scale.warnings.{shape}.{n}')} warning lines "
                    f"(flood: more than {WARNING_FLOOD})",
                    verdict(ok, f"scale.tracebacks.{shape}.{n}")))
    return out


def shape_keys(plan: dict[str, Any]) -> list[str]:
    """"1w", "100w", "1w-closed" (runs before these existed saved the watcher counts)."""
    return [s if isinstance(s, str) else f"{s}w" for s in plan["shapes"]]


def shape_label(plan: dict[str, Any], key: str) -> str:
    label: str = plan.get("shape_labels", {}).get(key, key)
    return label


def header(results: Results) -> str:
    meta = results.meta
    info = meta["machine"]
    kind = "INTERRUPTED, " if meta.get("interrupted") else ""
    return (f"circus-sd scale benchmark ({kind}{meta['started']}, {meta.get('duration_s')} s): "
            f"{info['nproc']} x {info['cpu']}, kernel {info['kernel']}, load "
            f"{' '.join(info['loadavg_start'])} → {' '.join(info.get('loadavg_end', []))}\n"
            "median [min-max]; ratios: circus-sd / the other, on medians")


def limits_text(results: Results) -> str:
    limits = results.meta["limits"]
    lines = [f"- {key}: {value}" for key, value in limits.items()]
    for who, got in results.extra.get("daemon_limits", {}).items():
        lines.append(f"- {who}'s own limits while running (soft/hard): open files "
                     f"{got.get('nofile')}, processes {got.get('nproc')}")
    return "\n".join(lines)


def write_outputs(results: Results, base: str) -> None:
    """base.md (header, limits, targets, the table, findings), base.png; the table printed."""
    table_rows = [f"| {t} | {fig} | {v} |" for t, fig, v in targets(results)]
    findings = "".join(f"\n- {text}" for text in results.extra.get("findings", []))
    with open(base + ".md", "w") as f:
        f.write(header(results) + "\n\nLimits:\n\n" + limits_text(results) + "\n\n"
                + f"Issue 18's targets for circus-sd at N = {max(results.meta['plan']['ns']):,}:"
                + "\n\n| target | figure | |\n|---|---|---|\n" + "\n".join(table_rows)
                + "\n\n" + _present(results).table(markdown=True) + "\n"
                + (f"\nnotes:{findings}\n" if findings else ""))
    if plot(results, base + ".png"):
        print(f"plot: {base}.png")
    print(header(results) + "\n\n" + _present(results).table()
          + ("\n\nnotes:" + findings if findings else ""))
    print("\ntargets:\n" + "\n".join(f"  {v:>14}  {t}: {fig}" for t, fig, v in targets(results)))
    print(f"\nresults: {base}.json, {base}.md")


def _present(results: Results) -> Results:
    """The rows that have a figure or a note (a small N not run for every figure is left out)."""
    shown = Results(results.meta)
    for key in results.ordered_keys():
        if results.samples.get(key) or results.notes.get(key):
            shown.define(results.metrics[key])
            for who, values in results.samples.get(key, {}).items():
                shown.add(results.metrics[key], who, *values)
            for who, text in results.notes.get(key, {}).items():
                shown.note(results.metrics[key], who, text)
    return shown


def plot(results: Results, path: str) -> bool:
    """Cost per process (ms) against N, log x: `start` command and daemon start, one line per
    supervisor and shape, and the machine's burst posix_spawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    plan = results.meta["plan"]
    ns = sorted({*plan["ns"], *([plan["ref_n"]] if plan["ref_n"] else [])})
    if len(ns) < 2:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    panels = (("`start` command → N exist", "start_cmd_pp"),
              ("daemon start → N exist", "start_daemon_pp"))
    colors = dict(zip(SUBJECTS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    for ax, (title, kind) in zip(axes, panels, strict=True):
        for who in SUBJECTS:
            for index, shape in enumerate(shape_keys(plan)):
                pts = [(n, s.median) for n in ns
                       if (s := results.summary(f"scale.{kind}.{shape}.{n}", who))]
                if pts:
                    label = who if shape == "1w" else f"{who}, {shape_label(plan, shape)}"
                    ax.plot(*zip(*pts, strict=True), marker="os^"[index % 3], color=colors[who],
                            linestyle=("-", ":", "-.")[index % 3], label=label)
        pts = [(n, s.median) for n in ns
               if (s := results.summary(f"scale.machine.burst_pp.{n}", MACHINE))]
        if pts:
            ax.plot(*zip(*pts, strict=True), "k--", marker="x", label="machine: burst posix_spawn")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ns, [f"{n:,}" for n in ns])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_title(f"{title}: cost per process", fontsize=10)
        ax.set_xlabel("N processes (log)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("ms per process (log)")
    axes[0].legend(fontsize=8)
    fig.suptitle(header(results).splitlines()[0], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
