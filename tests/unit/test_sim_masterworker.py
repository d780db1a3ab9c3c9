"""The reference's own identities (no MPI): EF21/EF with the identity compressor are GD,
EF21 keeps g = mean g_i, EF21's Lyapunov descent at the theory step, theory step sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from decomp.compress import Identity, TopK
from decomp.data import load_dataset
from decomp.errors import ConfigError
from decomp.problems import initial_point, split_problem
from decomp.sim import simulate
from decomp.theory import ef21_stepsize, ef21_theta_beta


@pytest.fixture(scope="module")
def work():
    ds = load_dataset("breast_cancer", scale="standard")
    return split_problem(ds, "logistic", 5), initial_point("normal", ds.n_features, seed=1)


@pytest.mark.parametrize("algorithm,options", [("ef21", {"init": "compressed"}),
                                               ("ef21", {"init": "full"}), ("ef", {}),
                                               ("ef21_plus", {"init": "full"}), ("dcgd", {})])
def test_identity_compressor_reduces_to_gd(work, algorithm: str, options: dict) -> None:
    probs, x0 = work
    gd = simulate("gd", probs, x0, lr=0.2, steps=30)
    tr = simulate(algorithm, probs, x0, lr=0.2, steps=30, compressor=Identity(), **options)
    np.testing.assert_allclose(tr.xs, gd.xs, rtol=1e-12, atol=1e-13)


def test_ef21_master_g_is_mean_of_worker_g(work) -> None:
    probs, x0 = work
    tr = simulate("ef21", probs, x0, lr=0.1, steps=40, compressor=TopK(2))
    np.testing.assert_allclose(tr.state["g"], tr.state["G"].mean(axis=0), rtol=1e-12,
                               atol=1e-15)


def test_ef_error_identity(work) -> None:
    """EF: after every step, e_i + v_i equals what was to be sent (p_i = e_i + γ∇f_i)."""
    probs, x0 = work
    C = TopK(3)
    tr = simulate("ef", probs, x0, lr=0.1, steps=1, compressor=C)
    P = np.stack([0.1 * p.grad(x0) for p in probs])  # e^0 = 0
    V = np.stack([C.reference(P[i]) for i in range(len(probs))])
    np.testing.assert_array_equal(tr.state["E"] + V, P)
    np.testing.assert_array_equal(tr.xs[1], x0 - V.sum(axis=0) / len(probs))


@pytest.mark.parametrize("init", ["compressed", "full"])
def test_ef21_lyapunov_decreases_at_the_theory_step(work, init: str) -> None:
    """EF21, Theorem 1 (Richtárik, Sokolov, Fatkhullin 2021), at the theory step
    γ = 1/(L + L̃ √(β/θ)) itself: with G^t = (1/n) Σ_i ‖g_i^t − ∇f_i(x^t)‖², the Lyapunov
    function Φ_t = f(x^t) + γ/(2θ) G^t satisfies Φ_{t+1} <= Φ_t − (γ/2)‖∇f(x^t)‖² at every
    step (deterministically for Top-k, a contraction per draw), hence the theorem's bound
    (1/T) Σ_t ‖∇f(x^t)‖² <= 2 (Φ_0 − f^inf)/(γT) with f^inf >= 0 (logistic loss)."""
    probs, x0 = work
    Ls = [p.smoothness() for p in probs]
    L = float(np.mean(Ls))  # f = mean f_i is mean(L_i)-smooth
    alpha = 1 / 30  # Top-1 on d = 30
    theta, beta = ef21_theta_beta(alpha)
    gamma = ef21_stepsize(L, Ls, alpha)
    assert gamma == pytest.approx(1 / (L + math.sqrt(np.mean(np.square(Ls))) *
                                       math.sqrt(beta / theta)), rel=1e-12)
    T = 40
    phi, sq = [], []
    for t in range(T + 1):  # G^t from a run of t steps (the state after its last step)
        tr = simulate("ef21", probs, x0, lr=gamma, steps=t, compressor=TopK(1), init=init)
        x = tr.xs[-1]
        grads = np.stack([p.grad(x) for p in probs])
        G = float(np.mean(np.sum((tr.state["G"] - grads) ** 2, axis=1)))
        f = float(np.mean([p.loss(x) for p in probs]))
        phi.append(f + gamma / (2 * theta) * G)
        sq.append(float(np.sum(grads.mean(axis=0) ** 2)))
    slack = 1e-12 * phi[0]
    for t in range(T):
        assert phi[t + 1] <= phi[t] - gamma / 2 * sq[t] + slack, (t, phi[t + 1], phi[t], sq[t])
    assert np.mean(sq[:T]) <= 2 * phi[0] / (gamma * T)
    assert sq[T] < 0.7 * sq[0]  # and it moved: the gradient fell (slowly: γ is small)


def test_theory_constants() -> None:
    assert ef21_theta_beta(1.0) == (1.0, 0.0)
    assert ef21_stepsize(2.0, [3.0, 5.0], 1.0) == 0.5
    theta, beta = ef21_theta_beta(0.75)
    assert theta == pytest.approx(0.5) and beta == pytest.approx(0.5)
    want = 1 / (2.0 + math.sqrt((9 + 25) / 2) * math.sqrt(beta / theta))
    assert ef21_stepsize(2.0, [3.0, 5.0], 0.75) == pytest.approx(want, rel=1e-15)
    with pytest.raises(ConfigError):
        ef21_theta_beta(0.0)


def test_unknown_algorithm(work) -> None:
    probs, x0 = work
    with pytest.raises(ConfigError, match="unknown algorithm 'adam'"):
        simulate("adam", probs, x0, lr=0.1, steps=1)
