"""Properties of the algorithms that surviving mutants showed no test stated (docs/testing.md,
"Mutation testing"). Each test names the property it protects. The in-process ring of
threads is the one of test_algorithms_pure.py (loaded from its file, not copied)."""

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


@pytest.mark.parametrize("eta", [0.0, -0.5, 1.5, float("nan")])
def test_ef21_sgdm_refuses_a_momentum_weight_outside_0_1(eta: float) -> None:
    """EF21-SGDM's η is in (0, 1]: 0 (the estimate never moves), a negative or a > 1 weight
    is a ConfigError at construction; 1 and a small positive η are accepted."""
    from decomp.algorithms.ef21_sgdm import EF21SGDM
    from decomp.compress import TopK
    from decomp.errors import ConfigError

    with pytest.raises(ConfigError):
        EF21SGDM(TopK(k=2), eta=eta)
    assert EF21SGDM(TopK(k=2), eta=1.0).eta == 1.0
    assert EF21SGDM(TopK(k=2), eta=1e-6).eta == 1e-6


def test_master_worker_methods_refuse_compressors_their_analysis_does_not_cover() -> None:
    """``check(d)``: error feedback needs a contractive compressor (Rand-k is not), DCGD an
    unbiased one (Top-k is not), and any compressor must fit d (Top-k with k > d)."""
    from decomp.algorithms.ef import DCGD, EF
    from decomp.algorithms.ef21 import EF21
    from decomp.compress import RandK, TopK
    from decomp.errors import ConfigError

    for alg in (EF21(RandK(k=2)), EF(RandK(k=2)), DCGD(TopK(k=2)), EF21(TopK(k=20)),
                DCGD(RandK(k=20))):
        with pytest.raises(ConfigError):
            alg.check(10)
    for alg in (EF21(TopK(k=2)), DCGD(RandK(k=2)), pure.MW_CASES["gd"]()):
        alg.check(10)  # covered: no error
