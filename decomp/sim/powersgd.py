"""Reference of PowerSGD (Vogels, Karimireddy, Jaggi 2019), built from its algorithm object
(:class:`decomp.algorithms.powersgd.PowerSGD`), on n x d arrays (row i = worker i).

Per compressed tensor (M_i the (m, k) block of g_i + e_i, Q the shared (k, r) matrix)::

    Q ← orth(Q);  P = Σ_i M_i Q;  P̂ = orth(P);  Q = (1/n) Σ_i M_iᵀ P̂;  M̂ = P̂ Qᵀ;  e_i = M_i − M̂

dense tensors take the mean gradient; x ← x − γ U (U: the M̂'s and dense means). Sums over
workers add rows in worker order (``A.sum(axis=0)``), as the thread transports' all-reduce
does, so those runs agree bit for bit; MPI's all-reduce may add in another order at n > 2
(docs/algorithms.md, PowerSGD: the tolerance). Which tensors are compressed, and the initial
Q, come from the class's :func:`~decomp.algorithms.powersgd.low_rank_plan` and
:func:`~decomp.algorithms.powersgd.draw_q` (a split rule and a random draw, not arithmetic).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decomp.algorithms.powersgd import draw_q, low_rank_plan
from decomp.compress import Compressor
from decomp.layout import Layout
from decomp.problems import Problem
from decomp.sim._common import Trace, _grads

__all__ = ["gram_schmidt", "simulate_powersgd"]


def gram_schmidt(A: np.ndarray) -> np.ndarray:
    """The columns of A (rows, r) orthonormalised in order (a zero column stays zero): a
    copy."""
    A = A.copy()
    for j in range(A.shape[1]):
        norm = np.sqrt(np.dot(A[:, j], A[:, j]))  # ‖a_j‖
        if norm > 0:
            A[:, j] = A[:, j] / norm
        if j + 1 < A.shape[1]:  # a_i ← a_i − (a_j · a_i) a_j for every later column i
            A[:, j + 1:] = A[:, j + 1:] - np.outer(A[:, j], A[:, j] @ A[:, j + 1:])
    return A


def simulate_powersgd(alg: Any, problems: Sequence[Problem], x0: np.ndarray, *, lr: float,
                      steps: int, seed: int, C: Compressor, layout: Layout) -> Trace:
    """PowerSGD from x0 (d,) for ``steps`` steps on the model's ``layout``: state E (n, d)
    the errors e_i, Q the last Q's (flat), up_bytes (T+1,) the bytes a worker sends at step t
    (the warm-up's differ): d values in a dense step; Σ_dense size + Σ_compressed r·(m + k)
    values in a compressed one (each worker receives as many: all-reduces)."""
    del C
    n, d, dt = len(problems), x0.size, x0.dtype
    plan = low_rank_plan(layout, alg.rank, alg.min_compression_rate)
    q = np.empty(plan.second, dtype=dt)
    draw_q(q, plan, seed, n, 0)
    x, xs, sent = x0.copy(), [x0.copy()], np.zeros(n, dtype=np.int64)
    E = np.zeros((n, d), dtype=dt)
    up = np.zeros(steps + 1, dtype=np.float64)  # bytes a worker sends at step t
    for t in range(1, steps + 1):
        G = _grads(problems, x, seed, t, alg.batch_size)
        if t - 1 < alg.start_iter or not plan.blocks:
            x = x - lr * (G.sum(axis=0) / n)
            xs.append(x)
            sent += d * dt.itemsize
            up[t] = d * dt.itemsize
            continue
        Ms = G + E
        U = np.empty(d, dtype=dt)
        for off, size, _ in plan.dense:
            U[off:off + size] = Ms[:, off:off + size].sum(axis=0) / n
        if not alg.warm_start:
            draw_q(q, plan, seed, n, t)
        for b in plan.blocks:
            sl = slice(b.offset, b.offset + b.m * b.k)
            Mi = [Ms[i, sl].reshape(b.m, b.k) for i in range(n)]
            Q = gram_schmidt(q[b.q_at:b.q_at + b.k * b.r].reshape(b.k, b.r))
            P = gram_schmidt(np.stack([M @ Q for M in Mi]).sum(axis=0))
            Q = np.stack([M.T @ P for M in Mi]).sum(axis=0) / n
            Mhat = (P @ Q.T).ravel()
            U[sl] = Mhat
            E[:, sl] = Ms[:, sl] - Mhat
            q[b.q_at:b.q_at + b.k * b.r] = Q.ravel()
        x = x - lr * U
        xs.append(x)
        sent += (plan.first + plan.second) * dt.itemsize
        up[t] = (plan.first + plan.second) * dt.itemsize
    return Trace(np.stack(xs), sent, {"E": E, "Q": q, "up_bytes": up})
