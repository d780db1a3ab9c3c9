"""What the MPI-vs-reference tests share: run an algorithm on this rank and keep its iterates,
and the master-worker setting they all use (breast cancer, logistic, one shard per worker)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from decomp.algorithms import Env
from decomp.comm import MasterWorker
from decomp.data.tabular import load_dataset
from decomp.problems import initial_point, split_problem


def run_iterates(alg: Any, env: Any, x0: np.ndarray, steps: int,
                 every_step: Callable[..., None] | None = None) -> tuple[Any, np.ndarray]:
    """``alg`` from ``x0`` for ``steps`` steps on this rank: the last state and the iterates
    x^0 .. x^steps, shape (steps + 1, d). ``every_step(alg, env, state)`` after each step."""
    state = alg.init(env, x0)
    xs = [state.x.copy()]
    for _ in range(steps):
        state = alg.step(env, state)
        xs.append(state.x.copy())
        if every_step is not None:
            every_step(alg, env, state)
    return state, np.stack(xs)


def masterworker_setting(comm: Any, master: str, dtype: str, seed: int, lr: float,
                         aggregation: str = "gather") -> tuple[MasterWorker, Env, list[Any],
                                                               np.ndarray]:
    """The transport, this rank's env, every worker's f_i and x^0 of the master-worker tests."""
    tp = MasterWorker(comm, master, aggregation)
    ds = load_dataset("breast_cancer", scale="standard", dtype=dtype)
    probs = split_problem(ds, "logistic", tp.n_workers)
    x0 = initial_point("normal", ds.n_features, seed=seed, dtype=dtype)
    env = Env(tp, probs[tp.worker] if tp.is_worker else None, tp.n_workers, seed, lr)
    return tp, env, probs, x0
