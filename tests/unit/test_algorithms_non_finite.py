"""A non-finite value stops a run cleanly: a node records the first step it went non-finite
at, and a worker with a non-finite gradient still sends a payload of the gather's size, so
the run ends with a DivergenceError on every rank, not a transport error. Written for gaps
mutation testing found (docs/testing.md, "Mutation testing"). The in-process ring of threads
is the one of test_algorithms_pure.py (loaded from its file, not copied)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from decomp.errors import DivergenceError

_spec = importlib.util.spec_from_file_location(
    "_algorithms_pure", Path(__file__).with_name("test_algorithms_pure.py"))
pure = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pure)


@pytest.mark.parametrize("case", ["dpsgd", "dcd", "ecd", "choco"])
def test_a_node_keeps_the_first_step_it_went_non_finite_at(case: str) -> None:
    """``state.bad`` is the FIRST step at which the node's values were non-finite (0 = never):
    a start with a NaN makes every node bad at step 1, and later steps (still NaN) must not
    overwrite it with their own step number."""
    run = pure.Run(4, 9, 0.2)
    run.x0[0] = np.nan
    (res,) = pure.run_together([(run, pure.CASES[case][1]())], steps=4)
    assert [st.bad for _, st in res] == [1] * run.n


@pytest.mark.parametrize("case", ["gd", "sgdm", "ef", "dcgd", "ef21", "ef21_plus", "ef21_sgdm"])
def test_a_non_finite_gradient_sends_a_payload_of_the_gather_size(case: str) -> None:
    """A worker whose gradient turns non-finite at a finite x (an overflowing loss) still sends
    a payload of exactly the gather's fixed size (the one-worker transport asserts it), and the
    run stops with a DivergenceError, not a transport error."""
    probs, x0 = pure._problem(1, 7)
    alg = pure.MW_CASES[case]()
    env = pure.Env(pure.OneWorker(), probs[0], 1, pure.SEED, 0.3)
    clean = alg.grad

    def grad(env, x, step):  # noqa: ANN001, ANN202
        g = clean(env, x, step)
        return g * np.nan if step == 2 else g

    alg.grad = grad
    state = alg.init(env, x0)
    with pytest.raises(DivergenceError):
        for _ in range(4):
            state = alg.step(env, state)
