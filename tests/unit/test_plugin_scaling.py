"""Autoscale decisions on a fake clock: bounds, hysteresis, cooldown, step."""

from __future__ import annotations

import pytest

from circus_sd.config.plugin_options import PluginOptionError, parse_options
from circus_sd.plugins.autoscale import AutoscaleOptions
from circus_sd.plugins.scaling import Decision, Move, ScalePolicy, Scaler

POLICY = ScalePolicy(minimum=1, maximum=4, grow_above=75, shrink_below=25, cooldown=30, step=1)


def replay(
    scaler: Scaler, current: int, history: list[tuple[float, float | None]]
) -> list[tuple[float, int, int]]:
    """Feed (time, load) samples, applying each decision at once: (time, from, to) of each."""
    moves = []
    for now, load in history:
        decision = scaler.decide(now, current, load)
        if decision is not None:
            moves.append((now, decision.current, decision.target))
            current = decision.target
            scaler.applied(now)
    return moves


def test_the_hysteresis_band_holds_the_count() -> None:
    scaler = Scaler(POLICY)
    for load in (25.0, 50.0, 75.0):  # the band's edges included: neither above nor below
        assert scaler.decide(0.0, 2, load) is None


def test_grows_above_and_shrinks_below_by_step_within_bounds() -> None:
    scaler = Scaler(POLICY)
    grow = scaler.decide(0.0, 2, 90.0)
    assert grow == Decision(Move.GROW, 2, 3, 90.0, "load above 75")
    assert grow.delta == 1
    assert scaler.decide(0.0, 4, 99.0) is None  # at max
    shrink = scaler.decide(0.0, 3, 10.0)
    assert shrink is not None and (shrink.move, shrink.target) == (Move.SHRINK, 2)
    assert scaler.decide(0.0, 1, 0.0) is None  # at min


def test_step_is_clamped_to_the_bounds() -> None:
    scaler = Scaler(ScalePolicy(1, 5, 75, 25, cooldown=0, step=3))
    assert replay(scaler, 1, [(0, 90), (1, 90), (2, 90)]) == [(0, 1, 4), (1, 4, 5)]
    assert replay(scaler, 5, [(3, 0), (4, 0), (5, 0)]) == [(3, 5, 2), (4, 2, 1)]


def test_cooldown_after_any_change_on_a_fake_clock() -> None:
    scaler = Scaler(POLICY)
    history = [(t, 90.0) for t in range(0, 100, 5)]
    # 1 -> 2 at t=0, then one more each time the 30 s cooldown is over, up to max.
    assert replay(scaler, 1, history) == [(0, 1, 2), (30, 2, 3), (60, 3, 4)]
    # A drop right after the last grow waits for the cooldown too.
    scaler.applied(100.0)
    assert scaler.in_cooldown(129.9)
    assert scaler.decide(129.9, 4, 0.0) is None
    later = scaler.decide(130.0, 4, 0.0)
    assert later is not None and later.target == 3


def test_load_spikes_inside_the_band_do_not_flap() -> None:
    scaler = Scaler(ScalePolicy(1, 4, 75, 25, cooldown=0))
    noisy = [(float(t), load) for t, load in enumerate([80, 70, 30, 74, 26, 60, 40, 50])]
    assert replay(scaler, 1, noisy) == [(0.0, 1, 2)]


def test_bounds_are_enforced_whatever_the_load_and_cooldown() -> None:
    scaler = Scaler(POLICY)
    scaler.applied(0.0)
    assert scaler.decide(1.0, 0, None) == Decision(Move.GROW, 0, 1, None, "below min 1")
    too_many = scaler.decide(1.0, 9, 99.0)
    assert too_many is not None and (too_many.move, too_many.target) == (Move.SHRINK, 4)


def test_no_measure_no_decision() -> None:
    assert Scaler(POLICY).decide(0.0, 2, None) is None


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({}, "watcher", "required"),
        ({"watcher": "web", "min": "5", "max": "2"}, None, "min <= max"),
        ({"watcher": "web", "grow_above": "10", "shrink_below": "10"}, None, "must be below"),
        ({"watcher": "web", "signal": "queue"}, "socket", "required with signal = queue"),
        ({"watcher": "web", "signal": "load"}, "signal", "expected one of cpu, pressure, queue"),
        ({"watcher": "web", "step": "0"}, "step", "integer >= 1"),
        ({"watcher": "web", "loop_rate": "0"}, "loop_rate", "> 0"),
    ],
)
def test_autoscale_options_are_checked(
    options: dict[str, str], key: str | None, message: str
) -> None:
    with pytest.raises(PluginOptionError) as caught:
        parse_options(AutoscaleOptions, options)
    assert caught.value.key == key
    assert message in caught.value.message


def test_autoscale_options_and_their_policy() -> None:
    options, unknown = parse_options(
        AutoscaleOptions,
        {"watcher": "web", "min": "2", "max": "8", "step": "2", "cooldown": "10", "x": "1"},
    )
    assert unknown == ["x"]
    assert options.policy() == ScalePolicy(2, 8, 75.0, 25.0, 10.0, 2)
