"""DeepSqueeze's reference (decomp.sim.deepsqueeze) against what the paper says it is — the
properties equality with the MPI runtime cannot see — and its option checks."""

from __future__ import annotations

import numpy as np
import pytest

from decomp.algorithms.deepsqueeze import DeepSqueeze
from decomp.compress import QSGD, Identity, TopK, make_compressor
from decomp.config import load_config
from decomp.data import load_dataset
from decomp.errors import ConfigError
from decomp.problems import initial_point, oracle_grad, split_problem
from decomp.runner import plan_method
from decomp.sim import reference
from decomp.topologies import mixing_matrix, mixing_schedule

N = 8


@pytest.fixture(scope="module")
def work():
    ds = load_dataset("breast_cancer", scale="standard")
    return split_problem(ds, "logistic", N), initial_point("normal", ds.n_features, seed=3)


@pytest.mark.parametrize("kind", ["ring", "schedule"])
def test_identity_with_eta_1_is_dpsgd_adapt_then_combine(work, kind: str) -> None:
    """C = identity keeps e = 0, and η = 1 makes X ← X½ + (W − I) X½ = W (X − γG)."""
    probs, x0 = work
    W = mixing_matrix("ring", N) if kind == "ring" else mixing_schedule("one-peer-hypercube", N)
    steps, lr = 20, 0.3
    tr = reference(DeepSqueeze(Identity(), consensus_step=1.0, batch_size=16), probs, x0, W,
                   lr=lr, steps=steps, seed=4)
    X = np.tile(x0, (N, 1))
    for t in range(1, steps + 1):
        Wd = (W if kind == "ring" else W(t - 1)).dense()
        G = np.stack([oracle_grad(p, X[i], seed=4, worker=i, step=t, batch_size=16)
                      for i, p in enumerate(probs)])
        X = Wd @ (X - lr * G)
        np.testing.assert_allclose(tr.xs[t], X, rtol=1e-12, atol=1e-13)
    assert not tr.state["E"].any()


@pytest.mark.parametrize("compressor", [TopK(2), make_compressor(
    {"kind": "scaled", "inner": {"kind": "qsgd", "levels": 2}})])
def test_the_mean_model_takes_the_mean_gradient_step_whatever_c(work, compressor) -> None:
    """W doubly stochastic: Σ_i ((W − I) C)_i = 0, so x̄^{t+1} = x̄^t − γ ḡ^t although the
    nodes disagree and C drops most of each message."""
    probs, x0 = work
    W = mixing_matrix("ring", N)
    lr, steps = 0.2, 15
    tr = reference(DeepSqueeze(compressor, consensus_step=0.5), probs, x0, W, lr=lr,
                   steps=steps, seed=1)
    for t in range(steps):
        X = tr.xs[t]
        gbar = np.mean([p.grad(X[i]) for i, p in enumerate(probs)], axis=0)
        np.testing.assert_allclose(tr.xs[t + 1].mean(axis=0), X.mean(axis=0) - lr * gbar,
                                   rtol=1e-11, atol=1e-12)
    assert tr.consensus_distance()[-1] > 0  # the nodes do differ


def test_the_error_is_what_compression_dropped(work) -> None:
    """e_i^T = v_i − C(v_i) of the last step: with Top-k, zero exactly where the payload was
    sent (k entries per node)."""
    probs, x0 = work
    tr = reference(DeepSqueeze(TopK(3), consensus_step=0.4), probs, x0, mixing_matrix("ring", N),
                   lr=0.1, steps=5)
    E = tr.state["E"]
    assert E.shape == (N, x0.size) and ((E == 0).sum(axis=1) >= 3).all()


def test_options_and_compressors_are_checked() -> None:
    with pytest.raises(ConfigError, match="deepsqueeze needs consensus_step"):
        DeepSqueeze(TopK(2))
    with pytest.raises(ConfigError, match=r"consensus_step must be in \(0, 1\]"):
        DeepSqueeze(TopK(2), consensus_step=0.0)
    with pytest.raises(ConfigError, match="not contractive; wrap it as Scaled"):
        DeepSqueeze(QSGD(levels=4), consensus_step=0.5).check(10)
    cfg = load_config({"methods": [{"algorithm": "deepsqueeze", "lr": 0.1,
                                    "compressor": {"kind": "topk", "k": 2},
                                    "consensus_step": 0.3}]})
    plan = plan_method(cfg.methods[0])
    assert plan.decentralized and plan.algorithm.consensus_step == 0.3
    with pytest.raises(ConfigError, match="needs a symmetric W"):
        DeepSqueeze(TopK(2), consensus_step=0.5).check_mixing(
            mixing_schedule("one-peer-exponential", 4))
