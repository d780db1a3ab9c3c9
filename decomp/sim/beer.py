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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decomp.compress import Compressor, Identity
from decomp.errors import ConfigError, DivergenceError
from decomp.problems import Problem
from decomp.rng import Key
from decomp.sim.decentralized import (
    DecentralizedTrace,
    _as_mixing,
    _grads,
    _rows,
    laplacian_update,
)


def _compress_rows(C: Compressor, M: np.ndarray, seed: int, step: int, stream: int) -> np.ndarray:
    """(n, d): row i = C(M[i]) with ``Key(seed, i + stream·n, step)``; a non-finite row is a
    divergence (the MPI node would send zeros and flag the step)."""
    if not np.isfinite(M).all():
        raise DivergenceError(f"beer: non-finite value at step {step}", step=step,
                              algorithm="beer", quantity="compressor input")
    n = M.shape[0]
    return np.stack([C.reference(M[i], Key(seed, i + stream * n, step)) for i in range(n)])


def simulate_beer(problems: Sequence[Problem], x0: np.ndarray, W: Any, *, lr: float,
                  steps: int, gamma: float | None = None, seed: int = 0,
                  compressor: Compressor | None = None, batch_size: int | None = None,
                  X0: np.ndarray | None = None) -> DecentralizedTrace:
    """BEER for ``steps`` iterations on n = len(problems) nodes; η = lr, γ = gamma.

    W: a :class:`~decomp.topologies.MixingMatrix` or an (n, n) array (validated). X0: optional
    (n, d) per-node start (default x0 on every node). Returns a
    :class:`~decomp.sim.DecentralizedTrace` (xs (T+1, n, d); bytes per node: two payloads per
    out-neighbour per step) with state {"H", "G", "V", "grad_prev"} (n, d) at step T.
    Raises :class:`DivergenceError` at the first step with a non-finite value.
    """
    if gamma is None:
        raise ConfigError("beer needs gamma")
    if not 0.0 < gamma <= 1.0:
        raise ConfigError(f"beer: gamma must be in (0, 1], got {gamma!r}")
    C = compressor if compressor is not None else Identity()
    n, d, dt = len(problems), x0.size, x0.dtype
    M = _as_mixing(W, n)
    rows = _rows(M)
    deg = np.array([M.out_neighbors(i)[0].size for i in range(n)], dtype=np.int64)
    indeg = np.array([len(nb) for _, nb in rows], dtype=np.int64)
    X = np.tile(x0, (n, 1)) if X0 is None else np.array(X0, dtype=dt)
    H, G = np.zeros_like(X), np.zeros_like(X)
    SH, SG = np.zeros_like(X), np.zeros_like(X)  # H(W − I), G(W − I): zero with H = G = 0
    V = np.stack([np.asarray(p.grad(X[i]), dtype=dt) for i, p in enumerate(problems)])
    grad_prev = V.copy()
    xs = [X.copy()]
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, steps + 1):
            X = (X + gamma * SH) - lr * V
            QH = _compress_rows(C, X - H, seed, t, 0)
            H = H + QH
            SH = laplacian_update(rows, SH, QH)
            grad = _grads(problems, X, seed, t, batch_size)
            V = (V + gamma * SG) + (grad - grad_prev)
            grad_prev = grad
            QG = _compress_rows(C, V - G, seed, t, 1)
            G = G + QG
            SG = laplacian_update(rows, SG, QG)
            if not (np.isfinite(X).all() and np.isfinite(V).all()):
                raise DivergenceError(f"beer: model became non-finite at step {t}", step=t,
                                      algorithm="beer", quantity="model x")
            xs.append(X.copy())
    sent = 2 * C.payload_bytes(d, dt) * steps * deg  # two payloads per out-neighbour per step
    received = 2 * C.payload_bytes(d, dt) * steps * indeg
    return DecentralizedTrace(np.stack(xs), sent, received,
                              {"H": H, "G": G, "V": V, "grad_prev": grad_prev})


__all__ = ["simulate_beer"]
