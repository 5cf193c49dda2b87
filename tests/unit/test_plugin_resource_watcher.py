"""resource_watcher's counting (Circus's rules, per process) and its options."""

from __future__ import annotations

import itertools
import signal

import pytest

from circus_sd.config.plugin_options import (
    MemoryLimit,
    PluginOptionError,
    memory_limit,
    parse_options,
)
from circus_sd.plugins.resource_watcher import (
    LimitCounter,
    ResourceWatcherOptions,
    RestartBackoff,
    Usage,
)

MIB = 1 << 20


def counter(**options: str) -> LimitCounter:
    parsed, unknown = parse_options(ResourceWatcherOptions, {"watcher": "web", **options})
    assert unknown == []
    return LimitCounter(parsed)


def test_circus_defaults() -> None:
    options = counter().options
    assert (options.max_cpu, options.min_cpu, options.health_threshold) == (90.0, None, 75.0)
    assert options.max_mem == MemoryLimit(90.0, absolute=False)
    assert (options.max_count, options.loop_rate, options.process_children) == (3, 60.0, False)
    assert options.child_signal == signal.SIGTERM


def test_over_max_mem_acts_after_max_count_checks_in_a_row() -> None:
    limits = counter(max_mem="100M", max_cpu="0", health_threshold="0", max_count="2")
    fat = Usage(cpu=1.0, mem_percent=5.0, rss=150 * MIB)
    assert limits.check(1234, fat) == []
    assert limits.check(1234, fat) == []
    assert limits.count(1234) == 2
    assert limits.check(1234, fat) == ["memory 150M > 100M"]
    # It starts counting afresh (the replacement has its own pid anyway).
    assert limits.count(1234) == 0
    assert limits.check(1234, fat) == []


def test_a_check_within_the_limits_resets_the_count() -> None:
    limits = counter(max_mem="100M", max_count="1")
    fat = Usage(cpu=None, mem_percent=5.0, rss=150 * MIB)
    lean = Usage(cpu=None, mem_percent=1.0, rss=10 * MIB)
    for _ in range(5):
        assert limits.check(1, fat) == []
        assert limits.check(1, lean) == []
    assert limits.count(1) == 0


def test_processes_are_counted_separately() -> None:
    limits = counter(max_mem="100M", max_count="1")
    fat = Usage(cpu=None, mem_percent=5.0, rss=150 * MIB)
    lean = Usage(cpu=None, mem_percent=1.0, rss=10 * MIB)
    assert limits.check(1, fat) == [] and limits.check(2, lean) == []
    assert limits.check(2, lean) == []
    assert limits.check(1, fat) == ["memory 150M > 100M"]
    limits.check(3, fat)
    limits.keep_only({2})
    assert limits.count(3) == 0


def test_cpu_min_and_health_rules() -> None:
    limits = counter(max_cpu="50", min_cpu="1", max_mem="", health_threshold="60", max_count="0")
    assert limits.check(1, Usage(cpu=80.0, mem_percent=2.0, rss=0)) == ["cpu 80.0% > 50%"]
    assert limits.check(1, Usage(cpu=0.5, mem_percent=2.0, rss=0)) == ["cpu 0.5% <= 1%"]
    assert limits.check(1, Usage(cpu=45.0, mem_percent=80.0, rss=0)) == ["health 62.5 > 60"]
    # Not measured yet: no CPU rule can count.
    assert limits.check(1, Usage(cpu=None, mem_percent=99.0, rss=0)) == []


def test_memory_in_percent_and_min_mem() -> None:
    limits = counter(max_mem="50", min_mem="1M", max_cpu="0", health_threshold="0", max_count="0")
    assert limits.check(1, Usage(cpu=0.0, mem_percent=60.0, rss=MIB)) == ["memory 60.0% > 50%"]
    assert limits.check(1, Usage(cpu=0.0, mem_percent=0.0, rss=1000)) == ["memory 1000 < 1.0M"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("90", MemoryLimit(90.0, False)),
        ("12.5", MemoryLimit(12.5, False)),
        ("200M", MemoryLimit(200.0 * MIB, True)),
        ("1.5G", MemoryLimit(1.5 * 1024 * MIB, True)),
        ("512k", MemoryLimit(512.0 * 1024, True)),
        ("64MiB", MemoryLimit(64.0 * MIB, True)),
        ("", None),
    ],
)
def test_memory_limits(raw: str, expected: MemoryLimit | None) -> None:
    assert memory_limit(raw) == expected


def test_bad_options_name_the_key() -> None:
    with pytest.raises(PluginOptionError) as caught:
        parse_options(ResourceWatcherOptions, {"watcher": "web", "max_mem": "lots"})
    assert caught.value.key == "max_mem"
    with pytest.raises(PluginOptionError) as caught:
        parse_options(ResourceWatcherOptions, {})
    assert caught.value.key == "watcher"
    options, _ = parse_options(ResourceWatcherOptions, {"service": "old", "child_signal": "KILL"})
    assert (options.target, options.child_signal) == ("old", signal.SIGKILL)


def test_restarts_in_a_row_back_off_then_give_up_until_within_limits() -> None:
    backoff = RestartBackoff(max_restarts=4)
    restarted_at = []
    for check in range(1, 40):
        backoff.checked(all_within=False)  # over its limits at every check
        if backoff.allows():
            backoff.restarted()
            restarted_at.append(check)
    # Waits of 1, 2, 4 checks between restarts, then no more: given up.
    assert restarted_at == [1, 2, 4, 8]
    assert backoff.given_up and backoff.total == 4
    # One check with every process within its limits: a new episode.
    backoff.checked(all_within=True)
    assert not backoff.given_up and backoff.allows()


def test_a_zero_max_restarts_never_gives_up_and_waits_at_most_64_checks() -> None:
    backoff = RestartBackoff(max_restarts=0)
    restarted_at = []
    for check in range(1, 400):
        backoff.checked(all_within=False)
        if backoff.allows():
            backoff.restarted()
            restarted_at.append(check)
    gaps = [b - a for a, b in itertools.pairwise(restarted_at)]
    assert gaps[:7] == [1, 2, 4, 8, 16, 32, 64] and set(gaps[7:]) == {64}
