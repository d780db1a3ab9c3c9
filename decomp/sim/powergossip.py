"""Reference of PowerGossip (Vogels, Karimireddy, Jaggi 2020; :mod:`decomp.algorithms.
powergossip`), on n × d arrays (row i = node i), written from the equations::

    dense tensors:   X ← W_t X                        (row i: W_ii x_i first, then j ascending)
    compressed (t > 1), per power step and edge {i, j} of W_t (i < j), per matrix block:
        c odd:   Q_ij ← orth(Q_ij);  P_ij ← (X_j − X_i) Q_ij
        c even:  P_ij ← orth(P_ij);  Q_ij ← (X_j − X_i)ᵀ P_ij
        x_i += W_ij γ_c P_ij Q_ijᵀ;  x_j −= W_ji γ_c P_ij Q_ijᵀ        (each node: j ascending)
    X ← X − γ G(X^t)

c = power_iterations + the edge's power steps so far. Every node keeps its own copy of each
edge's factors (as a rank does), so the reference can be checked against both ends. The split
into dense and compressed tensors and the initial draws come from the class
(:func:`~decomp.algorithms.powersgd.low_rank_plan`, :func:`~decomp.algorithms.powergossip.
draw_edge`: a rule and a random draw, not arithmetic); orth is :func:`~decomp.sim.powersgd.
gram_schmidt`. Bytes per edge direction and power step: the factor's values (plus the dense
tensors in the first one), as :meth:`decomp.comm.Neighborhood.swap` counts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decomp.algorithms.powergossip import draw_edge, factor_sizes, p_at, right_product
from decomp.algorithms.powersgd import low_rank_plan
from decomp.compress import Compressor
from decomp.errors import DivergenceError
from decomp.layout import Layout, layout_of
from decomp.problems import Problem
from decomp.sim.decentralized import DecentralizedTrace, _grads, _rows, mixing_period, start
from decomp.sim.powersgd import gram_schmidt

__all__ = ["simulate_powergossip"]


def simulate_powergossip(alg: Any, problems: Sequence[Problem], x0: np.ndarray, W: Any, *,
                         lr: float, steps: int, seed: int, C: Compressor,
                         X0: np.ndarray | None, layout: Layout | None = None
                         ) -> DecentralizedTrace:
    """PowerGossip for ``steps`` steps on n = len(problems) nodes from x0 (or X0 (n, d)) on
    the model's ``layout`` (None: one flat slot, all dense); state {"P", "Q", "uses"}: every
    node's per-edge factors (n, peers, ·) and counts at step T."""
    del C
    n, d, dt = len(problems), x0.size, x0.dtype
    period = mixing_period(alg, W, n, edges=False)
    rows_t = [_rows(M) for M in period]
    plan = low_rank_plan(layout_of(d, layout), alg.rank, alg.min_compression_rate)
    nd, np_, nq = factor_sizes(plan)
    peers = [sorted({j for rows in rows_t for j, _ in rows[i][1]}) for i in range(n)]
    slot = [{j: s for s, j in enumerate(ps)} for ps in peers]
    P = [np.empty((len(ps), np_), dtype=dt) for ps in peers]
    Q = [np.empty((len(ps), nq), dtype=dt) for ps in peers]
    uses = [np.zeros(len(ps), dtype=np.int64) for ps in peers]
    for i in range(n):
        for s, j in enumerate(peers[i]):
            pq = np.empty(np_ + nq, dtype=dt)
            draw_edge(pq, seed, n, i, j, 0)
            P[i][s], Q[i][s] = pq[:np_], pq[np_:]
    X = start(x0, n, X0)
    xs, sent = [X.copy()], np.zeros(n, dtype=np.int64)
    size = dt.itemsize
    for t in range(1, steps + 1):
        rows = rows_t[(t - 1) % len(period)]
        G = _grads(problems, X, seed, t, alg.batch_size)
        Xn = X.copy()
        for off, sz, _ in plan.dense:  # W_t X on the dense tensors
            for i, (w_ii, nbrs) in enumerate(rows):
                acc = X[i, off:off + sz] * w_ii
                for j, w in nbrs:
                    acc = acc + X[j, off:off + sz] * w
                Xn[i, off:off + sz] = acc
        for i, (_, nbrs) in enumerate(rows):
            sent[i] += nd * size * len(nbrs)
        rounds = alg.power_iterations if t > 1 and plan.blocks else 0
        for _ in range(rounds):
            Xn = _power_step(alg, Xn, rows, plan, P, Q, uses, slot, seed, n, sent, size)
        X = Xn - lr * G
        if not np.isfinite(X).all():
            raise DivergenceError(f"{alg.name}: model became non-finite at step {t}", step=t,
                                  algorithm=alg.name, quantity="model x")
        xs.append(X.copy())
    state: dict[str, np.ndarray] = {}
    if len({len(ps) for ps in peers}) == 1:
        state = {"P": np.stack(P), "Q": np.stack(Q), "uses": np.stack(uses)}
    return DecentralizedTrace(np.stack(xs), sent, sent.copy(), state)


def _power_step(alg: Any, X: np.ndarray, rows: Any, plan: Any, P: list[np.ndarray],
                Q: list[np.ndarray], uses: list[np.ndarray], slot: list[dict[int, int]],
                seed: int, n: int, sent: np.ndarray, size: int) -> np.ndarray:
    """One power step on every edge of W_t from X (n, d); returns the updated copy."""
    out = X.copy()
    for i, (_, nbrs) in enumerate(rows):
        for j, w in nbrs:  # node i's view of edge {i, j}: its own copy of the factors
            e = slot[i][j]
            right = right_product(alg.power_iterations, uses[i][e])
            if not alg.warm_start:
                fresh = np.empty(Q[i].shape[1] if right else P[i].shape[1], dtype=X.dtype)
                draw_edge(fresh, seed, n, i, j, alg.power_iterations + int(uses[i][e]))
                (Q if right else P)[i][e] = fresh
            lo, hi = min(i, j), max(i, j)
            for b in plan.blocks:
                sl = slice(b.offset, b.offset + b.m * b.k)
                Xlo, Xhi = X[lo, sl].reshape(b.m, b.k), X[hi, sl].reshape(b.m, b.k)
                pa = p_at(plan, b)
                if right:
                    F = gram_schmidt(Q[i][e, b.q_at:b.q_at + b.k * b.r].reshape(b.k, b.r))
                    Q[i][e, b.q_at:b.q_at + b.k * b.r] = F.ravel()
                    D = Xhi @ F - Xlo @ F
                    P[i][e, pa:pa + b.m * b.r] = D.ravel()
                else:
                    F = gram_schmidt(P[i][e, pa:pa + b.m * b.r].reshape(b.m, b.r))
                    P[i][e, pa:pa + b.m * b.r] = F.ravel()
                    D = Xhi.T @ F - Xlo.T @ F
                    Q[i][e, b.q_at:b.q_at + b.k * b.r] = D.ravel()
                sent[i] += (b.m if right else b.k) * b.r * size
                c = (-1 if i > j else 1) * w * alg.consensus_step
                U = P[i][e, pa:pa + b.m * b.r].reshape(b.m, b.r) @ \
                    Q[i][e, b.q_at:b.q_at + b.k * b.r].reshape(b.k, b.r).T
                out[i, sl] = out[i, sl] + (U * c).ravel()
            uses[i][e] += 1
    return out
