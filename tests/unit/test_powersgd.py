"""PowerSGD (decomp.algorithms.powersgd) on the in-memory thread transports, on a model of
several tensors (an artificial layout over a logistic regression's 30 weights):

- every rank's iterates equal the reference's bit for bit (the thread all-reduce adds in rank
  order, as the reference), for shared and dedicated masters, warm start or not, a dense
  warm-up (start_iter) and rank 2;
- with r ≥ min(m, k) every tensor is recovered exactly: the iterates are GD's up to rounding
  (the error feedback then keeps only each worker's deviation from the mean, which sums to 0);
- the error-feedback identity e_i = M_i − M̂ holds on every worker (Σ_i e_i = Σ_i M_i − n M̂);
- the bytes per step are r·(m + k) per compressed matrix plus the dense tensors, × itemsize:
  the class's comm_pattern, the reference's counter and the transport's counter agree;
- DDP's split rule (min_compression_rate, 1-D tensors dense) and the option checks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from decomp.algorithms import GD, Env
from decomp.algorithms.powersgd import PowerSGD, low_rank_plan, orthogonalise
from decomp.comm.threads import Board, ThreadMasterWorker, run_ranks
from decomp.data import load_dataset
from decomp.errors import ConfigError
from decomp.layout import Layout
from decomp.problems import initial_point, split_problem
from decomp.sim import reference
from decomp.sim.powersgd import gram_schmidt

SEED, LR, STEPS = 3, 0.5, 12
#: 30 weights as a 6×4 matrix, a 3-vector and a 3×1 "matrix" (k = 1: never worth compressing)
LAYOUT = Layout.from_shapes([("w", (6, 4)), ("b", (3,)), ("v", (3, 1))])


def _problem(n: int, dtype: str = "float64") -> tuple[list[Any], np.ndarray]:
    ds = load_dataset("synthetic", n_samples=40 * n, n_features=LAYOUT.d, seed=7, dtype=dtype)
    probs = split_problem(ds, "logistic", n)
    return probs, initial_point("normal", LAYOUT.d, seed=1).astype(dtype)


def _run(alg: Any, n: int, master: str = "shared", layout: Layout | None = LAYOUT,
         dtype: str = "float64") -> tuple[list[Any], Any, list[Any]]:
    """(per rank: (iterates (STEPS+1, d), final state, bytes up), reference trace, problems)."""
    probs, x0 = _problem(n, dtype)
    board = Board(n + (master == "dedicated"))

    def rank(r: int) -> tuple[np.ndarray, Any, int]:
        tp = ThreadMasterWorker(r, board, master)
        env = Env(tp, probs[tp.worker] if tp.worker is not None else None, n, SEED, LR,
                  layout=layout)
        state = alg.init(env, x0)
        xs = [state.x.copy()]
        for _ in range(STEPS):
            state = alg.step(env, state)
            xs.append(state.x.copy())
        return np.stack(xs), state, tp.bytes.up

    got = run_ranks(board, rank)
    ref = reference(alg, probs, x0, lr=LR, steps=STEPS, seed=SEED, layout=layout)
    return got, ref, probs


CASES = {
    "rank1": dict(),
    "rank2-rate1": dict(rank=2, min_compression_rate=1.0),
    "cold-start": dict(warm_start=False),
    "warm-up-5": dict(start_iter=5),
}


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("case", list(CASES))
def test_threads_equal_the_reference_bit_for_bit(case: str, n: int) -> None:
    alg = PowerSGD(**CASES[case])
    got, ref, _ = _run(alg, n)
    for xs, _, _ in got:
        np.testing.assert_array_equal(xs, ref.xs)
    assert np.abs(ref.xs[-1] - ref.xs[0]).max() > 0.01
    assert [b for _, _, b in got] == list(ref.bytes_up)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_dedicated_master_computes_the_same_model(dtype: str) -> None:
    got, ref, _ = _run(PowerSGD(rank=2, min_compression_rate=1.0), 3, "dedicated", dtype=dtype)
    for xs, _, _ in got:
        assert xs.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(xs, ref.xs)
    assert not got[0][1].e.any()  # the master keeps no error
    assert got[0][2] == 0  # and sends nothing it counts


def test_full_rank_is_gd_up_to_rounding() -> None:
    """r ≥ min(m, k) for every tensor and everything compressed (rate 0): M̂ = P̂P̂ᵀM̄ = M̄."""
    alg = PowerSGD(rank=6, min_compression_rate=0.0)
    plan = alg.plan(LAYOUT, LAYOUT.d)
    assert [(b.m, b.k, b.r) for b in plan.blocks] == [(6, 4, 4), (3, 1, 1)]
    got, ref, probs = _run(alg, 3)
    gd = reference(GD(), probs, ref.xs[0], lr=LR, steps=STEPS, seed=SEED)
    np.testing.assert_allclose(ref.xs, gd.xs, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got[0][0], ref.xs)
    # the errors are the workers' deviations from the mean: they sum to zero
    np.testing.assert_allclose(ref.state["E"].sum(axis=0), 0, atol=1e-12)


def test_error_feedback_identity_on_every_worker() -> None:
    """e_i = M_i − M̂ with M_i = g_i + e_i(previous): recomputed from a step's inputs."""
    alg = PowerSGD(rank=1)
    probs, x0 = _problem(2)
    board = Board(2)
    plan = alg.plan(LAYOUT, LAYOUT.d)
    (b,) = plan.blocks
    sl = slice(b.offset, b.offset + b.m * b.k)

    def rank(r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        env = Env(ThreadMasterWorker(r, board), probs[r], 2, SEED, LR, layout=LAYOUT)
        state = alg.init(env, x0)
        for _ in range(3):
            state = alg.step(env, state)
        e_before, x_before = state.e.copy(), state.x.copy()
        M = probs[r].grad(x_before) + e_before
        state = alg.step(env, state)
        return M, state.e.copy(), (x_before - state.x) / LR

    (M0, e0, u0), (M1, e1, u1) = run_ranks(board, rank)
    np.testing.assert_allclose(u0, u1, rtol=0, atol=0)  # one update everywhere
    Mhat = u0[sl]
    np.testing.assert_allclose(e0[sl], M0[sl] - Mhat, atol=1e-14)
    np.testing.assert_allclose(e1[sl], M1[sl] - Mhat, atol=1e-14)
    np.testing.assert_allclose((e0 + e1)[sl], (M0 + M1)[sl] - 2 * Mhat, atol=1e-14)
    assert not e0[b.m * b.k:].any()  # the dense tensors keep no error
    assert np.linalg.matrix_rank(Mhat.reshape(b.m, b.k)) == 1
    np.testing.assert_allclose(u0[sl.stop:], (M0 + M1)[sl.stop:] / 2, atol=1e-14)


@pytest.mark.parametrize("rank,rate", [(1, 2.0), (2, 1.0), (3, 0.0)])
def test_bytes_per_step_are_r_times_m_plus_k_plus_the_dense_tensors(rank: int,
                                                                     rate: float) -> None:
    alg = PowerSGD(rank=rank, min_compression_rate=rate)
    plan = alg.plan(LAYOUT, LAYOUT.d)
    comp = sum(b.r * (b.m + b.k) for b in plan.blocks)
    dense = sum(size for _, size, _ in plan.dense)
    want = 8 * (comp + dense)
    calls = alg.comm_pattern(LAYOUT.d, 2, layout=LAYOUT)
    assert [c.call for c in calls] == ["allreduce", "allreduce"]
    assert sum(c.nbytes for c in calls) == want
    got, ref, _ = _run(alg, 2)
    assert (ref.bytes_up == STEPS * want).all()
    assert all(b == STEPS * want for _, _, b in got)
    assert rate == 0 or want < 8 * LAYOUT.d  # rate 0 compresses even where it costs more
    # without a layout: one flat tensor, sent dense as GD
    flat = alg.comm_pattern(LAYOUT.d, 2)
    assert len(flat) == 1 and flat[0].nbytes == 8 * LAYOUT.d


def test_without_a_layout_it_is_gd_bit_for_bit() -> None:
    got, ref, probs = _run(PowerSGD(rank=2), 3, layout=None)
    gd = reference(GD(), probs, ref.xs[0], lr=LR, steps=STEPS, seed=SEED)
    np.testing.assert_array_equal(ref.xs, gd.xs)
    np.testing.assert_array_equal(got[1][0], gd.xs)


def test_the_split_follows_ddp() -> None:
    lay = Layout.from_shapes([("conv", (8, 3, 3, 3)), ("bias", (8,)), ("fc", (10, 3)),
                              ("s", ())])
    plan = low_rank_plan(lay, 1, 2.0)  # conv: 8×27, 1·35·2 = 70 < 216; fc: 1·13·2 = 26 < 30
    assert [(b.offset, b.m, b.k, b.r) for b in plan.blocks] == [(0, 8, 27, 1), (224, 10, 3, 1)]
    assert [(o, s) for o, s, _ in plan.dense] == [(216, 8), (254, 1)]
    plan = low_rank_plan(lay, 2, 2.0)  # fc: 2·13·2 = 52 ≥ 30 → dense
    assert [b.offset for b in plan.blocks] == [0]
    assert plan.first == 8 + 30 + 1 + 8 * 2 and plan.second == 27 * 2


def test_orthogonalise_is_the_reference_gram_schmidt() -> None:
    rng = np.random.default_rng(0)
    for shape in [(7, 1), (7, 3), (4, 4)]:
        A = rng.standard_normal(shape)
        B = A.copy()
        orthogonalise(B, np.empty(4))
        np.testing.assert_array_equal(B, gram_schmidt(A))
        np.testing.assert_allclose(B.T @ B, np.eye(shape[1]), atol=1e-12)
    Z = np.zeros((5, 2))
    orthogonalise(Z, np.empty(2))
    assert not Z.any()  # a zero column stays zero (no NaN)


@pytest.mark.parametrize("opts,match", [
    (dict(rank=0), "rank must be an integer >= 1"),
    (dict(rank=1.5), "rank must be an integer"),
    (dict(start_iter=-1), "start_iter must be an integer >= 0"),
    (dict(min_compression_rate=-1), "min_compression_rate must be a number >= 0"),
    (dict(warm_start="yes"), "warm_start must be true or false"),
])
def test_bad_options_are_refused(opts: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PowerSGD(**opts)


def test_the_registry_builds_it_with_ddp_defaults() -> None:
    from decomp.algorithms.registry import REGISTRY

    spec = REGISTRY["powersgd"]
    assert spec.options == {"rank": 1, "start_iter": 0, "min_compression_rate": 2.0,
                            "warm_start": True}
    alg = spec.build(options={"rank": 4})
    assert isinstance(alg, PowerSGD) and alg.rank == 4
    with pytest.raises(ConfigError, match="takes no compressor"):
        spec.build(compressor={"kind": "topk", "k": 2})
    assert dataclasses.is_dataclass(Env)
