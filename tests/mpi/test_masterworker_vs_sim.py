"""Every master–worker algorithm, run over MPI, equals decomp.sim iterate for iterate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _iterates import masterworker_setting, run_iterates

from decomp.algorithms import DCGD, EF, EF21, EF21SGDM, GD, SGDM, EF21Plus, Env
from decomp.comm import MasterWorker
from decomp.compress import QSGD, Identity, Natural, RandK, Scaled, ScaledSign, TopK
from decomp.data import load_dataset
from decomp.errors import DivergenceError
from decomp.problems import split_problem
from decomp.sim import reference

STEPS = 50
SEED = 11

CASES: dict[str, tuple[str, Any]] = {
    "gd": ("gd", lambda: GD()),
    "sgd": ("sgd", lambda: GD(batch_size=16)),
    "dcgd-identity": ("dcgd", lambda: DCGD(Identity())),
    "ef-top3": ("ef", lambda: EF(TopK(3))),
    "ef21-top1": ("ef21", lambda: EF21(TopK(1))),
    "ef21-full-top2": ("ef21", lambda: EF21(TopK(2), init="full")),
    "ef21-sgd-top2": ("ef21_sgd", lambda: EF21(TopK(2), batch_size=16)),
    "ef21-plus-top2": ("ef21_plus", lambda: EF21Plus(TopK(2))),
    "ef21-sgdm-top2": ("ef21_sgdm", lambda: EF21SGDM(TopK(2), eta=0.3, batch_size=16)),
    "ef21-sgdm-compressed-top2": ("ef21_sgdm", lambda: EF21SGDM(TopK(2), init="compressed",
                                                                batch_size=16, init_batch=32)),
    # the dense-model downlink computes the same iterates as the compressed one
    "ef21-model-top1": ("ef21", lambda: EF21(TopK(1), downlink="model")),
    "ef21-sgdm-model-top2": ("ef21_sgdm", lambda: EF21SGDM(TopK(2), eta=0.3, batch_size=16,
                                                           downlink="model")),
    "ef-model-top3": ("ef", lambda: EF(TopK(3), downlink="model")),
    "dcgd-model-randk5": ("dcgd", lambda: DCGD(RandK(5), downlink="model")),
    # n·k close to d: the master sends the dense encoding of the sum
    "ef21-top20-dense-downlink": ("ef21", lambda: EF21(TopK(20))),
    "sgdm": ("sgdm", lambda: SGDM(momentum=0.9, batch_size=16)),
    "sgdm-nesterov": ("sgdm", lambda: SGDM(momentum=0.5, nesterov=True, batch_size=16)),
}

# Every other compressor inside the algorithms that accept it: contractive ones (including
# unbiased ones made contractive by Scaled) in EF/EF21/EF21+, unbiased ones in DCGD. Random
# compressors draw from (seed, worker, step), which the reference replays.
COMPRESSOR_CASES: dict[str, tuple[str, Any]] = {
    "ef21-scaled-qsgd4": ("ef21", lambda: EF21(Scaled(QSGD(4)))),
    "ef21-randk3-unscaled": ("ef21", lambda: EF21(RandK(3, scaled=False))),
    "ef-scaled-sign": ("ef", lambda: EF(ScaledSign())),
    "ef-scaled-natural": ("ef", lambda: EF(Scaled(Natural()))),
    "ef21-plus-scaled-randk": ("ef21_plus", lambda: EF21Plus(Scaled(RandK(5)))),
    "dcgd-qsgd8": ("dcgd", lambda: DCGD(QSGD(8))),
    "dcgd-natural": ("dcgd", lambda: DCGD(Natural())),
    "dcgd-randk5": ("dcgd", lambda: DCGD(RandK(5))),
}
CASES.update(COMPRESSOR_CASES)


def _run(comm, master: str, dtype: str, case: str, lr: float = 0.2):
    alg = CASES[case][1]()  # one object: run over MPI and handed to its reference
    tp, env, probs, x0 = masterworker_setting(comm, master, dtype, SEED, lr)
    state, xs = run_iterates(alg, env, x0, STEPS)
    ref = reference(alg, probs, x0, lr=lr, steps=STEPS, seed=SEED)
    return tp, alg, state, xs, ref


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", [c for c in CASES if c not in COMPRESSOR_CASES])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("master", ["shared", "dedicated"])
def test_iterates_equal_reference(comm, master: str, dtype: str, tol: float, case: str) -> None:
    tp, _, _, xs, ref = _run(comm, master, dtype, case)
    assert xs.dtype == np.dtype(dtype)
    rel = np.abs(xs - ref.xs).max() / np.abs(ref.xs).max()
    rels = comm.allgather(float(rel))
    assert max(rels) <= tol, f"relative deviation from decomp.sim per rank: {rels}"
    # the bytes counted are the payload sizes the reference predicts, worker by worker
    sent = comm.allgather((tp.worker, tp.bytes.up))
    for w, b in sent:
        if w is not None:
            assert b == ref.bytes_up[w]
    assert np.abs(xs[-1] - xs[0]).max() > 0  # the run moved


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", list(COMPRESSOR_CASES))
@pytest.mark.parametrize("master", ["shared", "dedicated"])
def test_every_compressor_inside_the_algorithms(comm, master: str, case: str) -> None:
    tp, _, _, xs, ref = _run(comm, master, "float64", case, lr=0.05)
    rels = comm.allgather(float(np.abs(xs - ref.xs).max() / np.abs(ref.xs).max()))
    assert max(rels) <= 1e-12, rels
    sent = comm.allgather((tp.worker, tp.bytes.up))
    assert all(b == ref.bytes_up[w] for w, b in sent if w is not None)
    assert np.isfinite(xs).all() and np.abs(xs[-1] - xs[0]).max() > 0


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", ["ef21-top1", "ef21-plus-top2", "dcgd-qsgd8"])
def test_same_iterates_on_any_communicator(any_comm, case: str) -> None:
    """A duplicate or a rank-reversed split of the world computes the same iterates: worker
    indices, not world ranks, name shards and random streams."""
    _, _, _, xs, ref = _run(any_comm, "dedicated", "float64", case, lr=0.05)
    rels = any_comm.allgather(float(np.abs(xs - ref.xs).max() / np.abs(ref.xs).max()))
    assert max(rels) <= 1e-12, rels


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("master", ["shared", "dedicated"])
def test_ef21_master_g_equals_mean_of_worker_g(comm, master: str) -> None:
    tp, _, state, _, ref = _run(comm, master, "float64", "ef21-top1")
    g_locals = comm.gather(state.g_local, root=0)
    if tp.is_master:
        G = np.stack([g for g in g_locals if g is not None])
        np.testing.assert_allclose(state.g, G.mean(axis=0), rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(G, ref.state["G"])


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", ["ef21-sgdm-top2", "ef21-sgdm-compressed-top2"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("master", ["shared", "dedicated"])
def test_ef21_sgdm_is_bit_for_bit_the_reference(comm, master: str, dtype: str,
                                                case: str) -> None:
    """Same arithmetic as the reference (payloads decoded in worker order, no dense
    all-reduce): iterates, momenta v_i, g_i and g agree to the last bit. (SGDM's all-reduce
    may sum in another order, so it is compared within the tolerance above.)"""
    tp, _, state, xs, ref = _run(comm, master, dtype, case)
    ok = bool(np.array_equal(xs, ref.xs))
    if tp.is_worker:
        ok &= bool(np.array_equal(state.v, ref.state["V"][tp.worker]))
        ok &= bool(np.array_equal(state.g_local, ref.state["G"][tp.worker]))
    if tp.is_master:
        ok &= bool(np.array_equal(state.g, ref.state["g"]))
    oks = comm.allgather(ok)
    assert all(oks), f"ranks differing from decomp.sim: {oks}"


@pytest.mark.mpi(min_size=2)
def test_payload_bytes_match_the_wire_format(comm) -> None:
    tp, alg, _, _, _ = _run(comm, "shared", "float64", "ef21-top1")
    d, n = 30, comm.size
    per_step = alg.compressor.payload_bytes(d, np.float64)
    assert per_step == 16 + 8 + 2  # header + one float64 value + one uint16 index
    assert tp.bytes.up == (STEPS + 1) * per_step
    # no sizes round before the gather: every payload has the compressor's fixed size
    # compressed downlink: the union of ≤ n indices (5 bits each) and their summed values,
    # at init and every step, in one 64-byte broadcast chunk (8-byte size + payload +
    # padding, the latter two counted as control); never the dense model (d · 8 bytes)
    if tp.is_master:
        assert tp.bytes.down == 0 and tp.bytes.control == 0
    else:
        lo, hi = 16 + 8 + 1, 16 + 8 * n + (5 * n + 7) // 8
        assert (STEPS + 1) * lo <= tp.bytes.down <= (STEPS + 1) * hi
        assert tp.bytes.down + tp.bytes.control == 64 * (STEPS + 1)
    tp, _, _, _, _ = _run(comm, "shared", "float64", "ef21-model-top1")
    assert tp.bytes.down == (0 if tp.is_master else STEPS * d * 8)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", ["ef21-top1", "ef21-top20-dense-downlink", "dcgd-randk5",
                                  "ef-top3"])
def test_compressed_downlink_is_bit_for_bit_the_reference(comm, case: str) -> None:
    """Every rank applies the master's re-encoded sum itself: x (and g) agree with the
    reference to the last bit on every rank, and the model is never broadcast."""
    tp, _, state, xs, ref = _run(comm, "dedicated", "float64", case, lr=0.05)
    ok = bool(np.array_equal(xs, ref.xs))
    if getattr(state, "g", None) is not None and "g" in ref.state:
        ok &= bool(np.array_equal(state.g, ref.state["g"]))
    d = xs.shape[1]
    small = tp.is_master or tp.bytes.down < (STEPS + 1) * (16 + d * 8) or "dense" in case
    assert all(comm.allgather(ok and small))


@pytest.mark.mpi(min_size=2)
def test_divergence_is_reported_on_every_rank_at_the_same_step(comm) -> None:
    tp = MasterWorker(comm)
    ds = load_dataset("synthetic", n_samples=200, n_features=5)
    probs = split_problem(ds, "least_squares", tp.n_workers)
    env = Env(tp, probs[tp.worker], tp.n_workers, 0, 1e3)  # far beyond 2/L
    alg = EF21(TopK(2))
    state = alg.init(env, np.ones(5))
    step = None
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # the blow-up is the point
            for _ in range(2000):
                state = alg.step(env, state)
    except DivergenceError as e:
        step = e.step
    steps = comm.allgather(step)
    assert steps[0] is not None and len(set(steps)) == 1, steps
