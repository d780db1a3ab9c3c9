"""``[run] lr_schedule``: one step-size schedule applied identically to every method of a run.

    [run]
    lr_schedule = { kind = "multistep", milestones = [750, 1250], gamma = 0.1 }

Step t = 1, 2, ... of every method uses

    γ_t = γ · gamma^{#{m ∈ milestones : m < t}}

where γ is the method's resolved step size (``lr`` × ``lr_multiplier``): steps 1 … m₁ at γ,
steps m₁ + 1 … m₂ at γ·gamma, and so on — PyTorch's ``MultiStepLR`` with ``scheduler.step()``
after every optimizer step. It is the step decay of the PowerSGD paper (Vogels et al. 2019:
×0.1 at 50 % and 83 % of training) and of most CIFAR recipes. ``decomp run`` sets the
algorithm's step size before every step (:func:`decomp.runner.method.run_method`), so a
resumed run continues on the schedule; the single-process references of ``decomp sim`` take
one step size and refuse a schedule.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

from decomp.errors import ConfigError

#: the schedules lr_schedule's ``kind`` names
KINDS = ("multistep",)
_KEYS = {"multistep": ("kind", "milestones", "gamma")}


@dataclass(frozen=True)
class LRSchedule:
    """γ_t / γ = gamma^(number of milestones < t) for step t >= 1."""

    milestones: tuple[int, ...]
    gamma: float

    def factor(self, t: int) -> float:
        """The factor on the base step size at step t (1-based)."""
        return float(self.gamma ** bisect.bisect_left(self.milestones, t))

    def describe(self) -> str:
        return f"multistep: x{self.gamma:g} after step(s) {', '.join(map(str, self.milestones))}"


def parse_lr_schedule(spec: Any) -> LRSchedule | None:
    """The schedule of ``run.lr_schedule`` (None: a constant step size); a
    :class:`ConfigError` naming the key and the fix for anything else."""
    if spec is None:
        return None
    example = 'lr_schedule = { kind = "multistep", milestones = [750, 1250], gamma = 0.1 }'
    if not isinstance(spec, dict):
        raise ConfigError(f"run.lr_schedule must be a table such as {example}, got {spec!r}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"run.lr_schedule.kind must be one of {', '.join(KINDS)} (e.g. "
                          f"{example}), got {kind!r}")
    unknown = sorted(set(spec) - set(_KEYS[kind]))
    if unknown:
        raise ConfigError(f"run.lr_schedule: unknown key(s) {', '.join(unknown)} for kind "
                          f"{kind!r} (valid: {', '.join(_KEYS[kind])})")
    ms = spec.get("milestones")
    if (not isinstance(ms, list) or not ms
            or any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in ms)
            or any(b <= a for a, b in zip(ms, ms[1:], strict=False))):
        raise ConfigError(f"run.lr_schedule.milestones must be a non-empty list of increasing "
                          f"step numbers >= 1 (the step size drops after each), got {ms!r}")
    gamma = spec.get("gamma", 0.1)
    if (not isinstance(gamma, (int, float)) or isinstance(gamma, bool)
            or not math.isfinite(gamma) or gamma <= 0):
        raise ConfigError(f"run.lr_schedule.gamma must be a positive factor (0.1: a tenth of "
                          f"the step size after each milestone), got {gamma!r}")
    return LRSchedule(tuple(ms), float(gamma))
