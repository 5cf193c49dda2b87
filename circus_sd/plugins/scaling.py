"""Autoscale decisions: how many processes a watcher should have, from its load (pure).

No I/O and no clock of its own: `Scaler.decide(now, current, load)` is a function of the policy,
the time of the last change and its arguments, so it is tested on a fake clock.
"""

from __future__ import annotations

import dataclasses
import enum


class Move(enum.Enum):
    GROW = "grow"
    SHRINK = "shrink"


@dataclasses.dataclass(frozen=True)
class ScalePolicy:
    """`minimum`..`maximum` processes; grow above `grow_above`, shrink below `shrink_below`
    (the band between them is the hysteresis), by `step`, at most once per `cooldown` s."""

    minimum: int
    maximum: int
    grow_above: float
    shrink_below: float
    cooldown: float
    step: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.minimum <= self.maximum:
            raise ValueError(f"need 0 <= min <= max, got {self.minimum}..{self.maximum}")
        if self.shrink_below >= self.grow_above:
            raise ValueError(
                f"shrink_below ({self.shrink_below:g}) must be below grow_above "
                f"({self.grow_above:g}), or every measure would move the count"
            )
        if self.step < 1:
            raise ValueError(f"step must be >= 1, got {self.step}")


@dataclasses.dataclass(frozen=True)
class Decision:
    move: Move
    current: int
    target: int
    load: float | None
    reason: str

    @property
    def delta(self) -> int:
        return abs(self.target - self.current)


class Scaler:
    """Keeps the time of the last change; `decide` says what to do now, if anything."""

    def __init__(self, policy: ScalePolicy) -> None:
        self.policy = policy
        self.last_change: float | None = None

    def in_cooldown(self, now: float) -> bool:
        return self.last_change is not None and now - self.last_change < self.policy.cooldown

    def decide(self, now: float, current: int, load: float | None) -> Decision | None:
        """The change to make with `current` processes at `load` (None: not measured)."""
        policy = self.policy
        # Bounds first, whatever the load and the cooldown: they are the configuration.
        if current < policy.minimum:
            return Decision(Move.GROW, current, policy.minimum, load, f"below min {policy.minimum}")
        if current > policy.maximum:
            return Decision(
                Move.SHRINK, current, policy.maximum, load, f"above max {policy.maximum}"
            )
        if load is None or self.in_cooldown(now):
            return None
        if load > policy.grow_above and current < policy.maximum:
            target = min(policy.maximum, current + policy.step)
            return Decision(Move.GROW, current, target, load, f"load above {policy.grow_above:g}")
        if load < policy.shrink_below and current > policy.minimum:
            target = max(policy.minimum, current - policy.step)
            return Decision(
                Move.SHRINK, current, target, load, f"load below {policy.shrink_below:g}"
            )
        return None

    def applied(self, now: float) -> None:
        """A decision was carried out at `now`: the cooldown starts."""
        self.last_change = now
