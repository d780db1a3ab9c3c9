"""Vectorized reference of BEER (Zhao, Li, Li, Richtárik, Chi, NeurIPS 2022, Algorithm 1),
written from its matrix equations; row i of every n × d array is node i (the paper's column)::

    X ← X + γ H (W − I) − η V
    H ← H + C(X − H)
    V ← V + γ G (W − I) + ∇F(X; ξ^{t+1}) − ∇F(X_prev; ξ^t)
    G ← G + C(V − G)

from X^0 = x^0 on every row, H^0 = G^0 = 0, V^0 = ∇F(X^0) (the full local gradients).
H(W − I) and G(W − I) are kept as S_H, S_G (zero at the start, H^0 = G^0 = 0) and updated by
(W − I) Q from each step's compressed differences, row i adding −(Σ_{j≠i} W_ij) q_i first and
then W_ij q_j for j ascending (:func:`decomp.sim.decentralized.laplacian_update`): the order
a node of :mod:`decomp.algorithms.beer` applies the decoded payloads in, so the two agree bit
for bit. Keys: C(X − H) row i with ``Key(seed, i, t)``, C(V − G) row i with
``Key(seed, i + n, t)``; minibatches from (seed, i, t).

Time-varying W_t (``W`` a schedule of one symmetric peer per step, the one-peer hypercube):
per-edge replicas AH_i[k] = ĥ_{i→k}, BH_i[k] = ĥ_{k→i} (AG, BG for g), all zero at the
start, and the rounds at the start of the step (:mod:`decomp.algorithms.beer`): for t ≥ 2,
with k(i) node i's current peer under W_{t−1} (the step producing X^t uses W_{t−1})::

    AH_i[k] += C(X_i − AH_i[k]);  BH_i[k] += C(X_k − AH_k[i])       (likewise G from V)
    X ← (X + γ M_H) − η V;   V ← (V + γ M_G) + (∇F(X) − ∇F(X_prev))

with M_H row i = W[i,k] (BH_i[k] − AH_i[k]) summed from zero over the current k ascending.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decomp.algorithms.env import stream_key
from decomp.compress import Compressor
from decomp.errors import DivergenceError
from decomp.problems import Problem
from decomp.sim.decentralized import (
    DecentralizedTrace,
    _as_mixing,
    _grads,
    _rows,
    laplacian_update,
    mixing_period,
)
from decomp.topologies import is_schedule


def _compress_rows(C: Compressor, M: np.ndarray, seed: int, step: int, stream: int,
                   name: str) -> np.ndarray:
    """(n, d): row i = C(M[i]) with ``Key(seed, i + stream·n, step)``; a non-finite row is a
    divergence (the MPI node would send zeros and flag the step)."""
    if not np.isfinite(M).all():
        raise DivergenceError(f"{name}: non-finite value at step {step}", step=step,
                              algorithm=name, quantity="compressor input")
    n = M.shape[0]
    return np.stack([C.reference(M[i], stream_key(seed, i, n, step, stream)) for i in range(n)])


def _simulate_edges(alg: Any, problems: Sequence[Problem], X: np.ndarray, W: Any,
                    C: Compressor, *, lr: float, steps: int, seed: int) -> DecentralizedTrace:
    """BEER on a schedule with per-edge replicas (module doc)."""
    n, d = X.shape
    gamma, batch_size = alg.consensus_step, alg.batch_size
    period = mixing_period(alg, W, n, edges=True)
    rows_t = [_rows(M) for M in period]
    peers = [tuple(W.peers(i)) for i in range(n)]
    slot = [{k: p for p, k in enumerate(ps)} for ps in peers]
    AH, BH, AG, BG = ([np.zeros((len(ps), d), X.dtype) for ps in peers] for _ in range(4))
    V = np.stack([np.asarray(p.grad(X[i]), dtype=X.dtype) for i, p in enumerate(problems)])
    grad_prev = V.copy()
    per_msg = C.payload_bytes(d, X.dtype)
    sent = np.zeros(n, dtype=np.int64)
    xs = [X.copy()]

    def exchange(A: list[np.ndarray], B: list[np.ndarray], M: np.ndarray, t: int,
                 stream: int, peer: list[int | None]) -> None:
        if not np.isfinite(M).all():
            raise DivergenceError(f"{alg.name}: non-finite value at step {t}", step=t,
                                  algorithm=alg.name, quantity="compressor input")
        Q = {i: C.reference(M[i] - A[i][slot[i][k]], stream_key(seed, i, n, t, stream))
             for i, k in enumerate(peer) if k is not None}
        for i, k in enumerate(peer):
            if k is not None:  # W_t symmetric: k's peer is i
                A[i][slot[i][k]] = A[i][slot[i][k]] + Q[i]
                B[i][slot[i][k]] = B[i][slot[i][k]] + Q[k]

    def mixing(A: list[np.ndarray], B: list[np.ndarray], rows: list[Any]) -> np.ndarray:
        out = np.zeros_like(X)
        for i, (_, nbrs) in enumerate(rows):
            acc = np.zeros(d, X.dtype)
            for k, w in nbrs:
                acc = acc + (B[i][slot[i][k]] - A[i][slot[i][k]]) * w
            out[i] = acc
        return out

    for t in range(1, steps + 1):
        rows = rows_t[(t - 1) % len(period)]
        peer = [nbrs[0][0] if nbrs else None for _, nbrs in rows]
        if t > 1:  # H^0 = G^0 = 0: nothing to exchange at the first step
            exchange(AH, BH, X, t, 0, peer)
            exchange(AG, BG, V, t, 1, peer)
            sent += 2 * per_msg * np.array([k is not None for k in peer], dtype=np.int64)
        X = (X + gamma * mixing(AH, BH, rows)) - lr * V
        V = V + gamma * mixing(AG, BG, rows)
        grad = _grads(problems, X, seed, t, batch_size)
        V = V + (grad - grad_prev)
        grad_prev = grad
        if not (np.isfinite(X).all() and np.isfinite(V).all()):
            raise DivergenceError(f"{alg.name}: model became non-finite at step {t}",
                                  step=t, algorithm=alg.name, quantity="model x")
        xs.append(X.copy())
    state = {"V": V, "grad_prev": grad_prev}
    if len({len(ps) for ps in peers}) == 1:
        state.update({"AH": np.stack(AH), "BH": np.stack(BH), "AG": np.stack(AG),
                      "BG": np.stack(BG)})
    return DecentralizedTrace(np.stack(xs), sent, sent.copy(), state)


def simulate_beer(alg: Any, problems: Sequence[Problem], x0: np.ndarray, W: Any, *, lr: float,
                  steps: int, seed: int, C: Compressor,
                  X0: np.ndarray | None) -> DecentralizedTrace:
    """BEER for ``steps`` iterations on n = len(problems) nodes; η = lr, γ =
    ``alg.consensus_step``, τ = ``alg.batch_size``.

    W: a :class:`~decomp.topologies.MixingMatrix`, an (n, n) array (validated) or a schedule
    of one symmetric peer per step (one-peer-hypercube: per-edge replicas). X0: optional
    (n, d) per-node start (default x0 on every node). Returns a
    :class:`~decomp.sim.DecentralizedTrace` (xs (T+1, n, d); bytes per node: two payloads per
    out-neighbour per step) with state {"H", "G", "V", "grad_prev"} (n, d) at step T.
    Raises :class:`DivergenceError` at the first step with a non-finite value.
    """
    gamma, batch_size = alg.consensus_step, alg.batch_size
    n, d, dt = len(problems), x0.size, x0.dtype
    X = np.tile(x0, (n, 1)) if X0 is None else np.array(X0, dtype=dt)
    if is_schedule(W):
        with np.errstate(over="ignore", invalid="ignore"):
            return _simulate_edges(alg, problems, X, W, C, lr=lr, steps=steps, seed=seed)
    M = _as_mixing(W, n)
    rows = _rows(M)
    deg = np.array([M.out_neighbors(i)[0].size for i in range(n)], dtype=np.int64)
    indeg = np.array([len(nb) for _, nb in rows], dtype=np.int64)
    H, G = np.zeros_like(X), np.zeros_like(X)
    SH, SG = np.zeros_like(X), np.zeros_like(X)  # H(W − I), G(W − I): zero with H = G = 0
    V = np.stack([np.asarray(p.grad(X[i]), dtype=dt) for i, p in enumerate(problems)])
    grad_prev = V.copy()
    xs = [X.copy()]
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, steps + 1):
            X = (X + gamma * SH) - lr * V
            QH = _compress_rows(C, X - H, seed, t, 0, alg.name)
            H = H + QH
            SH = laplacian_update(rows, SH, QH)
            grad = _grads(problems, X, seed, t, batch_size)
            V = (V + gamma * SG) + (grad - grad_prev)
            grad_prev = grad
            QG = _compress_rows(C, V - G, seed, t, 1, alg.name)
            G = G + QG
            SG = laplacian_update(rows, SG, QG)
            if not (np.isfinite(X).all() and np.isfinite(V).all()):
                raise DivergenceError(f"{alg.name}: model became non-finite at step {t}",
                                      step=t, algorithm=alg.name, quantity="model x")
            xs.append(X.copy())
    sent = 2 * C.payload_bytes(d, dt) * steps * deg  # two payloads per out-neighbour per step
    received = 2 * C.payload_bytes(d, dt) * steps * indeg
    return DecentralizedTrace(np.stack(xs), sent, received,
                              {"H": H, "G": G, "V": V, "grad_prev": grad_prev})


__all__ = ["simulate_beer"]
