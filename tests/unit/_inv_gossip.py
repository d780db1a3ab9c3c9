"""Decentralized invariants (test_invariants.py runs them by name from its table): each runs
the real algorithm object on the thread transports (a ring of 4, and the one-peer hypercube
where the method keeps per-edge state) and checks the paper's identity at every step, then
(where cheap) on the decomp.sim reference."""

from __future__ import annotations

from typing import Any

import numpy as np
from _inv_harness import LR, SEED, build, close, grads, ref_states, run_dec, stack

from decomp.algorithms.env import stream_key
from decomp.compress import QSGD, TopK
from decomp.topologies import mixing_matrix, mixing_schedule

STEPS = 5
N = 4
#: a compressor each method's analysis accepts (biased Top-k where allowed)
COMPRESSOR = {"dcd_psgd": QSGD(levels=8), "ecd_psgd": QSGD(levels=64),
              "allreduce_qsgd": QSGD(levels=8)}
OPTIONS = {"choco_sgd": {"consensus_step": 0.5}, "beer": {"consensus_step": 0.5},
           "deepsqueeze": {"consensus_step": 0.5}}


def _alg(name: str) -> Any:
    return build(name, COMPRESSOR.get(name, TopK(2)), **OPTIONS.get(name, {}))


def _ring() -> tuple[Any, np.ndarray]:
    W = mixing_matrix("ring", N)
    return W, W.dense()


def _sources(Wd: np.ndarray, i: int) -> list[int]:
    return [j for j in range(Wd.shape[0]) if j != i and Wd[i, j] > 0]


def mean_step(name: str) -> None:
    """Gossip with a doubly stochastic W moves no mass: x̄^{t+1} = x̄^t − γ (1/n) Σ_i
    ∇F_i(x_i^t; ξ_i^{t+1}) (D-PSGD; CHOCO-SGD, Σ_i S_i = 0; DeepSqueeze, Σ_i (W − I) c = 0;
    the all-reduce baseline), gradients from the oracle; on the reference too."""
    alg = _alg(name)
    W, _ = _ring()
    problems, x0, snaps = run_dec(alg, W, N, STEPS)
    trs = ref_states(alg, problems, x0, STEPS, W)
    for t in range(STEPS):
        for X, Xn, what in ((stack(snaps, "x", t), stack(snaps, "x", t + 1), "threads"),
                            (trs[t + 1].xs[t], trs[t + 1].xs[t + 1], "reference")):
            G = np.stack([grads(problems, X[i], t + 1, alg.batch_size)[i] for i in range(N)])
            close(Xn.mean(axis=0), X.mean(axis=0) - LR * G.mean(axis=0),
                  f"{name} {what} step {t + 1}")


def identical_models(name: str) -> None:
    """The all-reduce baselines: every node holds the same x^t bit for bit."""
    W, _ = _ring()
    _, _, snaps = run_dec(_alg(name), W, N, STEPS)
    for t in range(STEPS + 1):
        X = stack(snaps, "x", t)
        for i in range(1, N):
            np.testing.assert_array_equal(X[i], X[0], err_msg=f"{name} step {t}")


def _replica_pairs(name: str) -> list[tuple[str, str]]:
    """(replica array, the owner's field it copies): DCD x̂_j = x_j itself (R[0] is x), ECD
    ỹ_j, CHOCO x̂_j, BEER h_j and g_j — row 0 on the owner."""
    return [("RH", "RH"), ("RG", "RG")] if name == "beer" else [("R", "R")]


def replicas_agree(name: str) -> None:
    """Every holder of node j's public value has the same copy, bit for bit, at every step
    (row 1 + k of node i's replicas = row 0 of its k-th source j); DCD: that copy is x_j. On
    the one-peer hypercube (per-edge state, where kept): x̂_{i→k} on i equals the copy k keeps
    of i, bit for bit."""
    alg = _alg(name)
    W, Wd = _ring()
    _, _, snaps = run_dec(alg, W, N, STEPS)
    for t in range(STEPS + 1):
        for arr, _own in _replica_pairs(name):
            for i in range(N):
                R = snaps[i][t][arr]
                for k, j in enumerate(_sources(Wd, i)):
                    np.testing.assert_array_equal(R[1 + k], snaps[j][t][arr][0],
                                                  err_msg=f"{name} {arr} step {t} {i}<-{j}")
        if name == "dcd_psgd":
            for i in range(N):
                np.testing.assert_array_equal(snaps[i][t]["R"][0], snaps[i][t]["x"])
    try:
        alg.check_mixing(mixing_schedule("one-peer-hypercube", N))
    except Exception:  # noqa: BLE001 - ECD refuses a schedule: nothing per edge to check
        return
    sched = mixing_schedule("one-peer-hypercube", N)
    _, _, snaps = run_dec(alg, sched, N, STEPS)
    peers = [sorted({i ^ (1 << b) for b in range(2)}) for i in range(N)]
    pairs = [("AH", "BH"), ("AG", "BG")] if name == "beer" else [("A", "B")]
    for t in range(STEPS + 1):
        for a, b in pairs:
            for i in range(N):
                for p, k in enumerate(peers[i]):
                    np.testing.assert_array_equal(
                        snaps[i][t][a][p], snaps[k][t][b][peers[k].index(i)],
                        err_msg=f"{name} {a}/{b} step {t} edge {i}->{k}")


def mixing_sum_from_replicas(name: str) -> None:
    """CHOCO-SGD's kept S_i (BEER's S_H, S_G) equals Σ_j W_ij (x̂_j − x̂_i) recomputed from the
    replicas of that step, to a few ulp (not bit for bit: kept by updates, not recomputed)."""
    alg = _alg(name)
    W, Wd = _ring()
    _, _, snaps = run_dec(alg, W, N, STEPS)
    pairs = [("SH", "RH"), ("SG", "RG")] if name == "beer" else [("S", "R")]
    for t in range(STEPS + 1):
        for S, R in pairs:
            for i in range(N):
                rep = snaps[i][t][R]
                want = np.zeros_like(rep[0])
                for k, j in enumerate(_sources(Wd, i)):
                    want += Wd[i, j] * (rep[1 + k] - rep[0])
                close(snaps[i][t][S], want, f"{name} {S} node {i} step {t}", ulps=16)
    assert np.any(snaps[0][STEPS][pairs[0][0]] != 0)


def beer_tracking(name: str) -> None:
    """BEER's gradient tracking: Σ_i v_i^t = Σ_i ∇F_i(x_i^t; ξ_i^t) (grad_prev is that
    gradient, checked against the oracle) and x̄^{t+1} = x̄^t − η v̄^t, on a ring and on the
    one-peer hypercube; the reference's V and grad_prev on both too."""
    alg = _alg(name)
    W, _ = _ring()
    for mixing in (W, mixing_schedule("one-peer-hypercube", N)):
        problems, x0, snaps = run_dec(alg, mixing, N, STEPS)
        for t in range(STEPS + 1):
            X, V, Gp = (stack(snaps, f, t) for f in ("x", "v", "grad_prev"))
            want = np.stack([grads(problems, X[i], t, alg.batch_size if t else None)[i]
                             for i in range(N)])
            np.testing.assert_array_equal(Gp, want)
            close(V.sum(axis=0), Gp.sum(axis=0), f"Σ v at step {t}")
            if t < STEPS:
                close(stack(snaps, "x", t + 1).mean(axis=0), X.mean(axis=0) - LR * V.mean(axis=0),
                      f"x̄ at step {t + 1}")
        for s, tr in enumerate(ref_states(alg, problems, x0, STEPS, mixing)):
            close(tr.state["V"].sum(axis=0), tr.state["grad_prev"].sum(axis=0),
                  f"reference {s}")


def deepsqueeze_error(name: str) -> None:
    """DeepSqueeze: e_i^{t+1} = v_i − C(v_i) with v_i = x_i^t − γ ∇F_i(x_i^t) + e_i^t, C drawn
    with node i's key (the compressor's plain reference, not the runtime's codec); on the
    reference's E too."""
    alg = _alg(name)
    C = alg.compressor
    W, _ = _ring()
    problems, x0, snaps = run_dec(alg, W, N, STEPS)
    trs = ref_states(alg, problems, x0, STEPS, W)
    for t in range(STEPS):
        for i in range(N):
            x, e = snaps[i][t]["x"], snaps[i][t]["e"]
            v = (x - LR * grads(problems, x, t + 1, alg.batch_size)[i]) + e
            c = C.reference(v, stream_key(SEED, i, N, t + 1))
            close(snaps[i][t + 1]["e"], v - c, f"e_{i} step {t + 1}")
            X, E = trs[t + 1].xs[t], trs[t].state.get("E", np.zeros((N, x0.size)))
            v = (X[i] - LR * grads(problems, X[i], t + 1, alg.batch_size)[i]) + E[i]
            close(trs[t + 1].state["E"][i], v - C.reference(v, stream_key(SEED, i, N, t + 1)),
                  f"reference e_{i} step {t + 1}")
    assert np.any(snaps[0][STEPS]["e"] != 0)


def dcd_difference(name: str) -> None:
    """DCD-PSGD (Tang et al. 2018, Alg. 1): x_i^{t+1} = x_i^t + C(z_i), z_i = Σ_j W_ij x_j^t −
    γ ∇F_i(x_i^t) − x_i^t (the replicas are exact), C the plain reference with node i's key."""
    alg = _alg(name)
    W, Wd = _ring()
    problems, _, snaps = run_dec(alg, W, N, STEPS)
    for t in range(STEPS):
        X = stack(snaps, "x", t)
        for i in range(N):
            g = grads(problems, X[i], t + 1, alg.batch_size)[i]
            z = Wd[i] @ X - LR * g - X[i]
            want = X[i] + alg.compressor.reference(z, stream_key(SEED, i, N, t + 1))
            close(snaps[i][t + 1]["x"], want, f"x_{i} step {t + 1}", ulps=256)


def ecd_estimate(name: str) -> None:
    """ECD-PSGD (Tang et al. 2018, Alg. 2), paper counter τ = t_start + t:
    x_i^{t+1} = Σ_j W_ij ỹ_j − γ ∇F_i(x_i^t), z_i = (1 − τ/2) x_i^t + (τ/2) x_i^{t+1},
    ỹ_i ← (1 − 2/τ) ỹ_i + (2/τ) C(z_i), C the plain reference with node i's key."""
    alg = _alg(name)
    W, Wd = _ring()
    problems, _, snaps = run_dec(alg, W, N, STEPS)
    for t in range(STEPS):
        tau = alg.t_start + t
        Y = np.stack([snaps[i][t]["R"][0] for i in range(N)])
        for i in range(N):
            x, xn = snaps[i][t]["x"], snaps[i][t + 1]["x"]
            g = grads(problems, x, t + 1, alg.batch_size)[i]
            close(xn, Wd[i] @ Y - LR * g, f"x_{i} step {t + 1}", ulps=256)
            z = (1 - tau / 2) * x + (tau / 2) * xn
            want = (1 - 2 / tau) * Y[i] + (2 / tau) * alg.compressor.reference(
                z, stream_key(SEED, i, N, t + 1))
            close(snaps[i][t + 1]["R"][0], want, f"ỹ_{i} step {t + 1}", ulps=256)


def low_rank_gossip(name: str) -> None:
    """PowerGossip (Vogels et al. 2020) on a model of a 3×2 matrix and a 3-vector, on a ring and
    on the one-peer hypercube, at every step: both ends of an edge hold the same factors P, Q
    and count, bit for bit; the gossip moves no mass (x̄^{t+1} = x̄^t − γ ḡ, and x̄ stays put
    at γ = 0); the matrix's gossip term on node i is Σ_j σ_ij W_ij P Qᵀ with P Qᵀ the rank-r
    projection of x_hi^t − x_lo^t on the factor just orthonormalised ((X_hi − X_lo) Q Qᵀ after
    a right product, P Pᵀ (X_hi − X_lo) after a left one); the vector mixes densely with W;
    the reference holds the same factors."""
    from decomp.algorithms.powergossip import right_product
    from decomp.comm.threads import Board, ThreadNeighborhood
    from decomp.layout import Layout
    from decomp.sim import reference

    layout = Layout.from_shapes([("w", (3, 2)), ("b", (3,))])
    alg = build(name, rank=1)
    assert len(alg.plan(layout, 9).blocks) == 1
    for mixing in (_ring()[0], mixing_schedule("one-peer-hypercube", N)):
        tps = [ThreadNeighborhood(mixing, i, Board(N)) for i in range(N)]
        problems, x0, snaps = run_dec(alg, mixing, N, STEPS + 2, layout=layout)
        _, _, still = run_dec(alg, mixing, N, STEPS + 2, layout=layout, lr=0.0)
        for t in range(STEPS + 2):
            X, X1 = stack(snaps, "x", t), stack(snaps, "x", t + 1)
            G = np.stack([grads(problems, X[i], t + 1, alg.batch_size)[i] for i in range(N)])
            close(X1.mean(axis=0), X.mean(axis=0) - LR * G.mean(axis=0), f"x̄ step {t + 1}")
            close(stack(still, "x", t + 1).mean(axis=0), x0, f"x̄ at γ = 0, step {t + 1}")
            tp = [tps[i].select(t) for i in range(N)]
            for i in range(N):
                want = np.zeros((3, 2))
                dense = tp[i].self_weight * X[i, 6:]
                for j in tp[i].sources:
                    a, b = tp[i].slot(j), tp[j].slot(i)
                    for f in ("P", "Q", "uses"):
                        np.testing.assert_array_equal(snaps[i][t + 1][f][a],
                                                      snaps[j][t + 1][f][b], err_msg=f)
                    dense = dense + tp[i].weights[j] * X[j, 6:]
                    if t == 0:
                        continue
                    P, Q = snaps[i][t + 1]["P"][a][:, None], snaps[i][t + 1]["Q"][a][:, None]
                    D = X[max(i, j), :6].reshape(3, 2) - X[min(i, j), :6].reshape(3, 2)
                    right = right_product(alg.power_iterations, snaps[i][t]["uses"][a])
                    proj = D @ Q @ Q.T if right else P @ P.T @ D
                    close(P @ Q.T, proj, f"P Qᵀ step {t + 1} edge {i}-{j}")
                    close((Q if right else P).T @ (Q if right else P), np.eye(1), "orthonormal")
                    want += (1 if i < j else -1) * tp[i].weights[j] * alg.consensus_step * proj
                gossip = X1[i] + LR * G[i] - X[i]
                close(gossip[:6].reshape(3, 2), want, f"gossip term node {i} step {t + 1}")
                close(X1[i, 6:] + LR * G[i, 6:], dense, f"dense mix node {i} step {t + 1}")
        ref = reference(alg, problems, x0, mixing, lr=LR, steps=STEPS + 2, seed=SEED,
                        layout=layout)
        for f in ("P", "Q", "uses"):
            np.testing.assert_array_equal(ref.state[f], stack(snaps, f, STEPS + 2), err_msg=f)


CHECKS = {f.__name__: f for f in (mean_step, identical_models, replicas_agree,
                                  mixing_sum_from_replicas, beer_tracking, deepsqueeze_error,
                                  dcd_difference, ecd_estimate, low_rank_gossip)}
