"""DivergenceError in the reference (decomp.sim's decentralized family): raised at the first
step with a non-finite value, with the step, the algorithm and what became non-finite; the
step agrees with an independent dense recurrence, so the runtime's report (compared with the
reference by the run-vs-sim tests) is checked against the mathematics, not against itself."""

from __future__ import annotations

import numpy as np
import pytest

from decomp.compress import QSGD, Identity
from decomp.data import load_dataset
from decomp.errors import DivergenceError
from decomp.problems import initial_point, split_problem
from decomp.sim import simulate_decentralized
from decomp.topologies import mixing_matrix

N = 4


@pytest.fixture(scope="module")
def work():
    ds = load_dataset("breast_cancer", scale="standard")
    return split_problem(ds, "least_squares", N), initial_point("normal", ds.n_features, seed=4)


def first_nonfinite_step(W: np.ndarray, probs, x0: np.ndarray, lr: float) -> int:
    """X ← W X − γ ∇F(X) (full gradients) in numpy until a row is not finite."""
    X = np.tile(x0, (N, 1))
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, 10_000):
            X = W @ X - lr * np.stack([p.grad(X[i]) for i, p in enumerate(probs)])
            if not np.isfinite(X).all():
                return t
    raise AssertionError("did not diverge")


@pytest.mark.parametrize("lr", [1e3, 1e30])
def test_dpsgd_divergence_is_raised_at_the_first_non_finite_step(work, lr: float) -> None:
    probs, x0 = work
    W = mixing_matrix("ring", N)
    want = first_nonfinite_step(W.dense(), probs, x0, lr)
    with pytest.raises(DivergenceError) as e:
        simulate_decentralized("dpsgd", probs, x0, W, lr=lr, steps=want + 5)
    assert (e.value.step, e.value.algorithm, e.value.quantity) == (want, "dpsgd", "model x")
    assert f"step {want}" in str(e.value)
    # one step fewer runs to the end with every iterate finite
    tr = simulate_decentralized("dpsgd", probs, x0, W, lr=lr, steps=want - 1)
    assert np.isfinite(tr.xs).all() and tr.xs.shape[0] == want


def test_a_non_finite_compressor_input_is_a_divergence_at_that_step(work) -> None:
    """DCD's compressor sees X½ − X; once it is not finite the reference stops there (before
    the model would be) and says it was the compressor input."""
    probs, x0 = work
    W = mixing_matrix("ring", N)
    with pytest.raises(DivergenceError) as e:
        simulate_decentralized("dcd_psgd", probs, x0, W, lr=1e30, steps=200,
                               compressor=Identity())
    step = e.value.step
    assert e.value.algorithm == "dcd_psgd" and e.value.quantity == "compressor input"
    assert step == first_nonfinite_step(W.dense(), probs, x0, 1e30)  # DCD + identity = D-PSGD
    tr = simulate_decentralized("dcd_psgd", probs, x0, W, lr=1e30, steps=step - 1,
                                compressor=Identity())
    assert np.isfinite(tr.xs).all()
    assert isinstance(e.value, FloatingPointError)  # callers catching numpy's error see it


def test_a_compressor_refusal_stops_the_reference_earlier(work) -> None:
    """QSGD refuses a finite input whose norm does not fit its float32 wire norm: the
    reference stops with that FloatingPointError (`decomp sim` reports it as a divergence at
    that step, as the MPI runtime does), before the model itself is non-finite."""
    probs, x0 = work
    W = mixing_matrix("ring", N)
    with pytest.raises(FloatingPointError, match="does not fit the float32 wire format"):
        simulate_decentralized("dcd_psgd", probs, x0, W, lr=1e30, steps=200,
                               compressor=QSGD(4))
