"""``[run] lr_schedule`` (decomp.config.lrschedule): the factor per step, the config errors,
and a ``decomp run`` on one rank (MPI.COMM_SELF) whose iterates follow the schedule exactly —
checked against plain gradient descent written out here with the run's own problem and x⁰."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decomp.config import load_config
from decomp.config.lrschedule import LRSchedule, parse_lr_schedule
from decomp.errors import ConfigError


def test_multistep_factor_drops_after_each_milestone() -> None:
    s = parse_lr_schedule({"kind": "multistep", "milestones": [3, 5], "gamma": 0.1})
    assert s == LRSchedule((3, 5), 0.1)
    assert [s.factor(t) for t in range(1, 8)] == [1.0, 1.0, 1.0, 0.1, 0.1, 0.1 ** 2, 0.1 ** 2]
    assert parse_lr_schedule(None) is None
    assert parse_lr_schedule({"kind": "multistep", "milestones": [2]}).gamma == 0.1  # default


def test_cosine_factor_is_torchs_cosine_annealing() -> None:
    s = parse_lr_schedule({"kind": "cosine", "steps": 4})
    assert s is not None
    assert [round(s.factor(t), 12) for t in (1, 2, 3, 4)] == \
        [1.0, round(0.5 * (1 + 2 ** -0.5), 12), 0.5, round(0.5 * (1 - 2 ** -0.5), 12)]


@pytest.mark.parametrize("spec, words", [
    ("step", "must be dict"),
    ({"kind": "linear", "milestones": [2]}, "kind must be one of multistep, cosine"),
    ({"kind": "cosine", "steps": 3}, "set lr_schedule.steps = 4"),
    ({"kind": "cosine"}, "the number of steps the cosine spans"),
    ({"kind": "multistep", "milestones": [5, 3]}, "increasing step numbers"),
    ({"kind": "multistep", "milestones": []}, "non-empty list"),
    ({"kind": "multistep", "milestones": [0]}, ">= 1"),
    ({"kind": "multistep", "milestones": [2], "gamma": 0}, "positive factor"),
    ({"kind": "multistep", "milestones": [2], "factor": 0.5}, "unknown key(s) factor"),
])
def test_a_bad_schedule_is_refused_when_the_config_loads(spec: Any, words: str) -> None:
    with pytest.raises(ConfigError, match="run.lr_schedule") as info:
        load_config(_raw("unused", 4, spec))
    assert words in str(info.value)


def _raw(out: str, steps: int, schedule: Any) -> dict[str, Any]:
    run: dict[str, Any] = {"steps": steps, "log_every": 2, "progress": False}
    if schedule is not None:
        run["lr_schedule"] = schedule
    return {"name": "sched", "seed": 1, "out_dir": out,
            "problem": {"kind": "least_squares", "dataset": "synthetic", "n_samples": 60,
                        "n_features": 5, "lam": 0.0},
            "run": run, "methods": [{"algorithm": "gd", "lr": 0.02}]}


def _final_x(run_dir: Path) -> np.ndarray:
    pointer = json.loads((run_dir / "checkpoints" / "m0.json").read_text())
    with np.load(run_dir / "checkpoints" / f"m0-s{pointer['step']}" / "rank0.npz") as z:
        return np.asarray(z["state.x"])


def test_decomp_run_follows_the_schedule(tmp_path: Path) -> None:
    from mpi4py import MPI

    from decomp.runner import run
    from decomp.runner.workload import prepare

    spec = {"kind": "multistep", "milestones": [3, 5], "gamma": 0.25}
    cfg = load_config(_raw(str(tmp_path / "a"), 7, spec))
    run(cfg, MPI.COMM_SELF)
    work = prepare(cfg, 1)
    f, x = work.problems[0], np.array(work.x0, dtype=np.float64)
    sched = parse_lr_schedule(spec)
    assert sched is not None
    for t in range(1, 8):
        x = x - (0.02 * sched.factor(t)) * f.grad(x)
    got = _final_x(tmp_path / "a" / "sched")
    np.testing.assert_allclose(got, x, rtol=1e-12, atol=0)
    # and the constant step size ends elsewhere: the schedule is what made them equal
    run(load_config(_raw(str(tmp_path / "b"), 7, None)), MPI.COMM_SELF)
    assert not np.allclose(_final_x(tmp_path / "b" / "sched"), x, rtol=1e-6)


def test_decomp_sim_refuses_a_schedule(tmp_path: Path) -> None:
    from decomp.runner.simulate import simulate_config

    cfg = load_config(_raw(str(tmp_path), 4, {"kind": "multistep", "milestones": [2]}))
    with pytest.raises(ConfigError, match="mpiexec -n N decomp run CONFIG"):
        simulate_config(cfg, 1)
