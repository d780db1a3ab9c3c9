"""``[run] lr_schedule``: one step-size schedule applied identically to every method of a run.

    [run]
    lr_schedule = { kind = "multistep", milestones = [750, 1250], gamma = 0.1 }
    lr_schedule = { kind = "cosine", steps = 1500 }

Step t = 1, 2, ... of every method uses, with γ the method's resolved step size (``lr`` ×
``lr_multiplier``),

    multistep:  γ_t = γ · gamma^{#{m ∈ milestones : m < t}}
    cosine:     γ_t = γ · ½ (1 + cos(π (t − 1) / steps))       (t ≤ steps = run.steps)

— PyTorch's ``MultiStepLR`` and ``CosineAnnealingLR(T_max=steps, eta_min=0)`` with
``scheduler.step()`` after every optimizer step. Multistep is the step decay of the PowerSGD
paper (Vogels et al. 2019: ×0.1 at 50 % and 83 % of training) and of most CIFAR recipes;
cosine needs no milestones (the step size falls smoothly to about 0 at the last step).
``decomp run`` sets the algorithm's step size before every step
(:func:`decomp.runner.method.run_method`), so a resumed run continues on the schedule; the
single-process references of ``decomp sim`` take one step size and refuse a schedule.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

from decomp.errors import ConfigError

#: the schedules lr_schedule's ``kind`` names
KINDS = ("multistep", "cosine")
_KEYS = {"multistep": ("kind", "milestones", "gamma"), "cosine": ("kind", "steps")}


@dataclass(frozen=True)
class LRSchedule:
    """γ_t / γ for step t >= 1: gamma^(number of milestones < t), or with ``steps`` set
    (cosine) ½ (1 + cos(π (t − 1) / steps))."""

    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    steps: int | None = None

    def factor(self, t: int) -> float:
        """The factor on the base step size at step t (1-based)."""
        if self.steps is not None:
            return 0.5 * (1.0 + math.cos(math.pi * min(t - 1, self.steps) / self.steps))
        return float(self.gamma ** bisect.bisect_left(self.milestones, t))

    def describe(self) -> str:
        if self.steps is not None:
            return f"cosine over {self.steps} steps"
        return f"multistep: x{self.gamma:g} after step(s) {', '.join(map(str, self.milestones))}"


def parse_lr_schedule(spec: Any, run_steps: int | None = None) -> LRSchedule | None:
    """The schedule of ``run.lr_schedule`` (None: a constant step size); a
    :class:`ConfigError` naming the key and the fix for anything else. run_steps: the run's
    ``run.steps`` (a cosine schedule must span them)."""
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
    if kind == "cosine":
        steps = spec.get("steps")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ConfigError(f"run.lr_schedule.steps must be the number of steps the cosine "
                              f"spans (an integer >= 1, normally run.steps), got {steps!r}")
        if run_steps is not None and steps < run_steps:
            raise ConfigError(f"run.lr_schedule.steps = {steps} is less than run.steps = "
                              f"{run_steps}: the step size would be 0 after step {steps}; "
                              f"set lr_schedule.steps = {run_steps}")
        return LRSchedule(steps=steps)
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
