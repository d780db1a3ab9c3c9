"""Vectorized references of D-PSGD, DCD-PSGD, ECD-PSGD, CHOCO-SGD and the all-reduce baselines,
each built from its algorithm object: X ∈ R^{n×d}, row i = node i's x_i.

Written from the papers' matrix equations (γ = lr, G = the n minibatch gradients with τ =
``alg.batch_size``, C applied row by row with node i's key ``Key(seed, i, t)`` through each
compressor's plain-numpy ``reference``):

- D-PSGD:          X ← W X − γ G(X)
- DCD-PSGD:        X½ = W X − γ G(X);  X ← X + C(X½ − X)            (replicas X̂ = X exactly)
- ECD-PSGD:        X' = W Y − γ G(X);  Z = (1 − t/2) X + (t/2) X';  Y ← (1 − 2/t) Y + (2/t) C(Z);
                   X ← X'   (t = t_start, t_start + 1, …)
- CHOCO-SGD:       X½ = X − γ G(X);  Q = C(X½ − X̂);  X̂ ← X̂ + Q;  S ← S + (W − I) Q;
                   X ← X½ + γ_c S  (γ_c = ``consensus_step``; S = (W − I) X̂, kept up to date
                   from the Q; S⁰ = (W − I) X̂⁰)
- all-reduce SGD:  x ← x − γ (1/n) Σ_i ∇F_i(x)
- all-reduce QSGD: x ← x − γ (1/n) Σ_i C(∇F_i(x))

Time-varying W_t: D-PSGD mixes with W_t as above; DCD-PSGD and CHOCO-SGD keep per-edge
replicas (:class:`~decomp.sim.decentralized.Edges`) and, with their current peer k(i) and
M_i = Σ_{k current} W_t[i,k] (B_i[k] − A_i[k]) (from zero, k ascending)::

    DCD-PSGD:   V_i = W_t[i,i] X_i + Σ_{k current} W_t[i,k] B_i[k] − γ G_i (self first, k
                ascending);  Q_i = C(V_i − A_i[k(i)]);  A_i[k(i)] += Q_i;
                B_i[j] += Q_j for the current source j of i;   X_i ← A_i[k(i)]
    CHOCO-SGD:  V_i = X_i − γ G_i;  the same round;  X_i ← V_i + γ_c M_i (M_i after the round)

ECD-PSGD refuses a schedule (its class's ``refuses_schedule``). Every function takes
``(alg, problems, x0, W, *, lr, steps, seed, C, X0)`` (see :func:`decomp.sim.reference`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decomp.compress import Compressor
from decomp.problems import Problem
from decomp.sim.decentralized import (
    DecentralizedTrace,
    Edges,
    Rows,
    _compress,
    drive,
    laplacian_mix,
    laplacian_update,
    mix,
    start,
)

__all__ = ["simulate_allreduce_compressed", "simulate_allreduce_sgd", "simulate_choco_sgd",
           "simulate_dcd_psgd", "simulate_dpsgd", "simulate_ecd_psgd"]


def _edges(alg: Any, W: Any, X: np.ndarray) -> Edges | None:
    """Per-edge replicas when W is a schedule and the method keeps them (else None)."""
    from decomp.topologies import is_schedule

    return Edges(W, X) if is_schedule(W) and alg.per_edge_replicas else None


def simulate_dpsgd(alg: Any, problems: Sequence[Problem], x0: np.ndarray, W: Any, *, lr: float,
                   steps: int, seed: int, C: Compressor,
                   X0: np.ndarray | None) -> DecentralizedTrace:
    """D-PSGD: X ← W_t X − γ G; d dense values per neighbour and step."""
    def update(t: int, rows: Rows, X: np.ndarray, G: np.ndarray) -> np.ndarray:
        return mix(rows, X) - lr * G

    return drive(alg, problems, x0, W, steps=steps, seed=seed, X0=X0,
                 msg_bytes=x0.size * x0.dtype.itemsize, update=update)


def simulate_dcd_psgd(alg: Any, problems: Sequence[Problem], x0: np.ndarray, W: Any, *, lr: float,
                      steps: int, seed: int, C: Compressor,
                      X0: np.ndarray | None) -> DecentralizedTrace:
    """DCD-PSGD (module doc); state {"A", "B"} on a schedule."""
    X = start(x0, len(problems), X0)
    edges = _edges(alg, W, X)

    def update(t: int, rows: Rows, X: np.ndarray, G: np.ndarray) -> np.ndarray:
        if edges is None:
            return X + _compress(C, (mix(rows, X) - lr * G) - X, seed, t, alg.name)
        V = np.empty_like(X)  # DCD's mix, peers' values from the edge replicas
        for i, (w_ii, nbrs) in enumerate(rows):
            acc = X[i] * w_ii
            for k, w in nbrs:
                acc = acc + edges.B[i][edges.slot[i][k]] * w
            V[i] = acc
        V = V - lr * G
        peer = edges.round(rows, V, C, seed, t, alg.name)
        return np.stack([V[i] if k is None else edges.A[i][edges.slot[i][k]].copy()
                         for i, k in enumerate(peer)])

    tr = drive(alg, problems, x0, W, steps=steps, seed=seed, X0=X,
               msg_bytes=C.payload_bytes(x0.size, x0.dtype), update=update)
    if edges is not None:
        tr.state.update(edges.arrays())
    return tr


def simulate_ecd_psgd(alg: Any, problems: Sequence[Problem], x0: np.ndarray, W: Any, *, lr: float,
                      steps: int, seed: int, C: Compressor,
                      X0: np.ndarray | None) -> DecentralizedTrace:
    """ECD-PSGD from t = ``alg.t_start``; state {"Y"}: the estimates ỹ."""
    Y = start(x0, len(problems), X0)

    def update(t: int, rows: Rows, X: np.ndarray, G: np.ndarray) -> np.ndarray:
        nonlocal Y
        tau = alg.t_start + t - 1
        new = mix(rows, Y) - lr * G
        Z = X * (1.0 - tau / 2) + new * (tau / 2)
        Y = Y * (1.0 - 2.0 / tau) + _compress(C, Z, seed, t, alg.name) * (2.0 / tau)
        return new

    tr = drive(alg, problems, x0, W, steps=steps, seed=seed, X0=X0,
               msg_bytes=C.payload_bytes(x0.size, x0.dtype), update=update)
    tr.state["Y"] = Y
    return tr


def simulate_choco_sgd(alg: Any, problems: Sequence[Problem], x0: np.ndarray, W: Any, *, lr: float,
                       steps: int, seed: int, C: Compressor,
                       X0: np.ndarray | None) -> DecentralizedTrace:
    """CHOCO-SGD with γ_c = ``alg.consensus_step``; state {"Xhat"} (static W) or {"A", "B"}
    (schedule)."""
    Y = start(x0, len(problems), X0)  # replicas x̂
    edges = _edges(alg, W, Y)
    S: np.ndarray | None = None  # (W − I) X̂ on a static W, from the first step's rows
    gamma = alg.consensus_step

    def update(t: int, rows: Rows, X: np.ndarray, G: np.ndarray) -> np.ndarray:
        nonlocal Y, S
        half = X - lr * G
        if edges is not None:
            edges.round(rows, half, C, seed, t, alg.name)
            return half + gamma * edges.mixing(rows, X)
        if S is None:
            S = laplacian_mix(rows, Y)
        Q = _compress(C, half - Y, seed, t, alg.name)
        Y = Y + Q
        S = laplacian_update(rows, S, Q)
        return half + gamma * S

    tr = drive(alg, problems, x0, W, steps=steps, seed=seed, X0=Y.copy(),
               msg_bytes=C.payload_bytes(x0.size, x0.dtype), update=update)
    tr.state.update(edges.arrays() if edges is not None else {"Xhat": Y})
    return tr


def _allreduce(alg: Any, problems: Sequence[Problem], x0: np.ndarray, W: Any, *, lr: float,
               steps: int, seed: int, code: Compressor | None,
               X0: np.ndarray | None) -> DecentralizedTrace:
    """x ← x − γ (1/n) Σ_i v_i, v_i = ∇F_i(x) (code None) or code(∇F_i(x)); the sum from
    zero in rank order."""
    n, d, dt = len(problems), x0.size, x0.dtype

    def update(t: int, rows: Rows, X: np.ndarray, G: np.ndarray) -> np.ndarray:
        V = G if code is None else _compress(code, G, seed, t, alg.name)
        acc = np.zeros(d, dtype=dt)
        for i in range(n):
            acc = acc + V[i]
        return np.tile(X[0] - lr * (acc / n), (n, 1))

    return drive(alg, problems, x0, W, steps=steps, seed=seed, X0=X0, msg_bytes=0,
                 update=update)


def simulate_allreduce_sgd(alg: Any, problems: Sequence[Problem], x0: np.ndarray, W: Any, *,
                           lr: float, steps: int, seed: int, C: Compressor,
                           X0: np.ndarray | None) -> DecentralizedTrace:
    """All-reduce SGD: each node contributes and receives d dense values per step."""
    tr = _allreduce(alg, problems, x0, W, lr=lr, steps=steps, seed=seed, code=None, X0=X0)
    tr.bytes_sent[:] = x0.size * x0.dtype.itemsize * steps
    tr.bytes_received[:] = tr.bytes_sent  # the reduced vector
    return tr


def simulate_allreduce_compressed(alg: Any, problems: Sequence[Problem], x0: np.ndarray, W: Any, *,
                                  lr: float, steps: int, seed: int, C: Compressor,
                                  X0: np.ndarray | None) -> DecentralizedTrace:
    """All-reduce of compressed gradients: one payload contributed per node and step, the
    n − 1 others' received."""
    tr = _allreduce(alg, problems, x0, W, lr=lr, steps=steps, seed=seed, code=C, X0=X0)
    tr.bytes_sent[:] = C.payload_bytes(x0.size, x0.dtype) * steps
    tr.bytes_received[:] = tr.bytes_sent * (len(problems) - 1)  # the others' payloads
    return tr
