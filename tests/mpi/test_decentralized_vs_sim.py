"""Every decentralized algorithm, run over MPI (one node per rank, n = comm.size), equals
decomp.sim's vectorized reference iterate for iterate (float64, 1e-10 relative), on a ring and
on the complete graph; plus the DCD replica identity and the gossip contraction rate.

Also run at 8 ranks by tests/e2e/test_decentralized_cli.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _iterates import run_iterates

from decomp.algorithms import (
    CHOCOSGD,
    DCDPSGD,
    DPSGD,
    ECDPSGD,
    AllreduceCompressed,
    AllreduceSGD,
    Env,
)
from decomp.comm import Neighborhood
from decomp.compress import Identity, TopK, make_compressor
from decomp.data import load_dataset
from decomp.problems import initial_point, split_problem
from decomp.sim import reference
from decomp.topologies import mixing_matrix

STEPS = 30
SEED = 7
LR = 0.2
BATCH = 16
TOL = 1e-10


def _c(spec: dict[str, Any]) -> Any:
    return make_compressor(spec)


#: case -> (registry name, the algorithm object: run over MPI and handed to its reference)
CASES: dict[str, tuple[str, Callable[[], Any]]] = {
    "dpsgd": ("dpsgd", lambda: DPSGD(batch_size=BATCH)),
    "dcd-identity": ("dcd_psgd", lambda: DCDPSGD(Identity(), batch_size=BATCH)),
    "dcd-qsgd4": ("dcd_psgd", lambda: DCDPSGD(_c({"kind": "qsgd", "levels": 4}),
                                              batch_size=BATCH)),
    "dcd-randk": ("dcd_psgd", lambda: DCDPSGD(_c({"kind": "randk", "k": 6}), batch_size=BATCH)),
    "ecd-qsgd8": ("ecd_psgd", lambda: ECDPSGD(_c({"kind": "qsgd", "levels": 8}),
                                              batch_size=BATCH)),
    "ecd-natural-t3": ("ecd_psgd", lambda: ECDPSGD(_c({"kind": "natural"}), t_start=3,
                                                   batch_size=BATCH)),
    "choco-top3": ("choco_sgd", lambda: CHOCOSGD(TopK(3), consensus_step=0.4,
                                                 batch_size=BATCH)),
    "choco-scaled-sign": ("choco_sgd", lambda: CHOCOSGD(_c({"kind": "scaled_sign"}),
                                                        consensus_step=0.2, batch_size=BATCH)),
    "allreduce-sgd": ("allreduce_sgd", lambda: AllreduceSGD(batch_size=BATCH)),
    "allreduce-qsgd2": ("allreduce_qsgd", lambda: AllreduceCompressed(
        _c({"kind": "qsgd", "levels": 2}), batch_size=BATCH)),
}


@pytest.fixture(scope="module")
def problems():
    from mpi4py import MPI

    ds = load_dataset("breast_cancer", scale="standard", dtype="float64")
    return (split_problem(ds, "logistic", MPI.COMM_WORLD.size),
            initial_point("normal", ds.n_features, seed=SEED))


def _run(comm, problems, case: str, topology: str, method: str = "auto", lr: float = LR,
         x_start: np.ndarray | None = None, every_step: Callable[..., None] | None = None):
    alg = CASES[case][1]()  # one object: run over MPI and handed to its reference
    probs, x0 = problems
    W = mixing_matrix(topology, comm.size)
    tp = Neighborhood(W, comm, method=method)
    env = Env(tp, probs[comm.rank], comm.size, SEED, lr)
    state, xs = run_iterates(alg, env, x0 if x_start is None else x_start, STEPS, every_step)
    return tp, W, alg, state, xs, probs, x0


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("topology", ["ring", "complete"])
@pytest.mark.parametrize("case", list(CASES))
def test_iterates_equal_reference(comm, problems, case: str, topology: str) -> None:
    tp, W, alg, state, xs, probs, x0 = _run(comm, problems, case, topology)
    ref = reference(alg, probs, x0, W, lr=LR, steps=STEPS, seed=SEED)
    mine = ref.xs[:, comm.rank]
    rel = float(np.abs(xs - mine).max() / np.abs(mine).max())
    moved = float(np.abs(xs[-1] - xs[0]).max())
    counts = (tp.bytes.up, tp.bytes.down, int(ref.bytes_sent[comm.rank]),
              int(ref.bytes_received[comm.rank]))
    tp.close()
    got = comm.allgather((rel, moved, counts, state.bad))
    assert max(g[0] for g in got) <= TOL, f"relative deviation per rank: {[g[0] for g in got]}"
    assert min(g[1] for g in got) > 0  # every node moved
    for up, down, want_up, want_down in (g[2] for g in got):
        assert (up, down) == (want_up, want_down)
    assert all(g[3] == 0 for g in got)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("topology", ["ring", "complete"])
@pytest.mark.parametrize("case", ["dpsgd", "dcd-identity", "dcd-randk", "choco-top3"])
def test_fused_mixing_is_bit_for_bit_the_reference(comm, problems, case: str,
                                                   topology: str) -> None:
    """D-PSGD's and DCD's fused mixing (received rows read in place) and CHOCO's incremental
    mixing sum do the reference's arithmetic in its order: equal to the last bit (float64)."""
    tp, W, alg, state, xs, probs, x0 = _run(comm, problems, case, topology)
    ref = reference(alg, probs, x0, W, lr=LR, steps=STEPS, seed=SEED)
    ok = bool(np.array_equal(xs, ref.xs[:, comm.rank]))
    if case.startswith("choco"):
        ok &= bool(np.array_equal(state.R[0], ref.state["Xhat"][comm.rank]))
    tp.close()
    assert all(comm.allgather(ok))


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("method", ["auto", "persistent", "isend", "neighbor"])
def test_every_exchange_method_gives_the_reference_iterates(comm, problems, method: str) -> None:
    """Each wire method (not one against "auto", which picks "persistent" for these small
    payloads) delivers the reference's iterates bit for bit, with fixed-size compressed
    payloads (DCD, QSGD) and dense models (D-PSGD)."""
    ok = []
    for case in ("dcd-qsgd4", "dpsgd"):
        tp, W, alg, _, xs, probs, x0 = _run(comm, problems, case, "ring", method=method)
        tp.close()
        ref = reference(alg, probs, x0, W, lr=LR, steps=STEPS, seed=SEED)
        ok.append(bool(np.array_equal(xs, ref.xs[:, comm.rank])))
    assert all(all(o) for o in comm.allgather(ok))


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("topology", ["ring", "complete"])
def test_dcd_replicas_equal_the_owners_model_after_every_step(comm, problems,
                                                              topology: str) -> None:
    """x̂_i held by every neighbour of i equals x_i exactly, after every step."""
    bad: list[tuple[int, int, int]] = []

    def check(alg, env, state) -> None:
        reps = alg.replicas(env, state)  # {j: this node's copy of x_j}, self included
        if not np.array_equal(reps[env.rank], state.x) or len(reps) != 1 + env.transport.indegree:
            bad.append((state.t, env.rank, -1))
        models = comm.allgather(state.x.copy())
        for j, copy in reps.items():
            if not np.array_equal(copy, models[j]):
                bad.append((state.t, env.rank, j))

    _run(comm, problems, "dcd-qsgd4", topology, every_step=check)
    _run(comm, problems, "dcd-randk", topology, every_step=check)
    assert not any(comm.allgather(bad)), comm.allgather(bad)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("topology", ["ring", "complete"])
def test_pure_gossip_contracts_consensus_distance_by_rho_squared(comm, problems,
                                                                 topology: str) -> None:
    """γ = 0: X ← W X, so (1/n) Σ ‖x_i − x̄‖² shrinks by at least ρ² per step."""
    d = problems[1].size
    start = np.random.default_rng(100 + comm.rank).standard_normal(d)
    cds: list[float] = []

    def consensus(x: np.ndarray) -> float:
        xbar = comm.allreduce(x) / comm.size
        return comm.allreduce(float((x - xbar) @ (x - xbar))) / comm.size

    def record(alg, env, state) -> None:
        cds.append(consensus(state.x))

    cd0 = consensus(start)
    _, W, _, _, _, _, _ = _run(comm, problems, "dpsgd", topology, lr=0.0, x_start=start,
                                  every_step=record)
    cd = [cd0, *cds]
    rho2 = W.rho ** 2
    ok = [cd[t + 1] <= rho2 * cd[t] * (1 + 1e-6) + 1e-28 for t in range(STEPS)]
    assert cd0 > 1 and all(ok), (rho2, [cd[t + 1] / cd[t] for t in range(STEPS) if cd[t]])


@pytest.mark.mpi(min_size=2)
def test_identity_dcd_and_choco_gamma_1_over_mpi(comm, problems) -> None:
    """The identities hold in the MPI runtime too (not only in the reference)."""
    _, _, _, _, d_ps, _, _ = _run(comm, problems, "dpsgd", "ring")
    _, _, _, _, dcd, _, _ = _run(comm, problems, "dcd-identity", "ring")
    name = "choco-id"
    CASES[name] = ("choco_sgd", lambda: CHOCOSGD(Identity(), consensus_step=1.0,
                                                 batch_size=BATCH))
    try:
        _, W, _, _, choco, probs, x0 = _run(comm, problems, name, "ring")
    finally:
        del CASES[name]
    from decomp.problems import oracle_grad

    X = np.tile(x0, (comm.size, 1))
    Wd = W.dense()
    want = [X[comm.rank].copy()]
    for t in range(1, STEPS + 1):
        G = np.stack([oracle_grad(p, X[i], seed=SEED, worker=i, step=t, batch_size=BATCH)
                      for i, p in enumerate(probs)])
        X = Wd @ (X - LR * G)
        want.append(X[comm.rank].copy())
    scale = np.abs(d_ps).max()
    errs = (float(np.abs(dcd - d_ps).max() / scale),
            float(np.abs(choco - np.stack(want)).max() / scale))
    got = comm.allgather(errs)
    assert max(e[0] for e in got) <= 1e-12 and max(e[1] for e in got) <= TOL, got
