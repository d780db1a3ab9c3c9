"""Vectorized reference of the decentralized family: X ∈ R^{n×d}, row i = node i's x_i.

Written from the papers' matrix equations (γ = lr, G = the n minibatch gradients, C applied
row by row with node i's key ``Key(seed, i, t)`` through each compressor's plain-numpy
``reference``):

- dpsgd:          X ← W X − γ G(X)
- dcd_psgd:       X½ = W X − γ G(X);  X ← X + C(X½ − X)            (replicas X̂ = X exactly)
- ecd_psgd:       X' = W Y − γ G(X);  Z = (1 − t/2) X + (t/2) X';  Y ← (1 − 2/t) Y + (2/t) C(Z);
                  X ← X'   (t = t_start, t_start + 1, …)
- choco_sgd:      X½ = X − γ G(X);  Q = C(X½ − X̂);  X̂ ← X̂ + Q;  S ← S + (W − I) Q;
                  X ← X½ + γ_c S      (S = (W − I) X̂, kept up to date from the Q; S⁰ = (W − I) X̂⁰)
- allreduce_sgd:  x ← x − γ (1/n) Σ_i ∇F_i(x)
- allreduce_qsgd: x ← x − γ (1/n) Σ_i C(∇F_i(x))

Products with W are summed row by row in the order the MPI nodes use (W_ii first, then the
neighbours ascending; for (W − I) X̂⁰ the sum Σ_{j≠i} W_ij (x̂_j − x̂_i) from zero; CHOCO's
update of S row i adds −(Σ_{j≠i} W_ij) q_i first, then W_ij q_j for j ascending, as a node
does when its own payload and then its neighbours' are decoded), so the reference agrees with
the MPI runtime to the last bit wherever the compressor's reference does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decomp.compress import Compressor, Identity
from decomp.errors import ConfigError, DivergenceError
from decomp.problems import Problem, oracle_grad
from decomp.rng import Key

ALGORITHMS = ("dpsgd", "dcd_psgd", "ecd_psgd", "choco_sgd", "allreduce_sgd", "allreduce_qsgd")
_UNBIASED_ONLY = ("dcd_psgd", "ecd_psgd", "allreduce_qsgd")


@dataclass
class DecentralizedTrace:
    """xs: (T+1, n, d) iterates X^0..X^T (row i = x_i); bytes_sent / bytes_received: (n,)
    payload bytes each node sent (one copy per out-neighbour; a collective counts the
    contribution once) and received, as :class:`~decomp.comm.Neighborhood` counts them;
    state: final named arrays (``Y`` estimates of ECD, ``Xhat`` replicas of CHOCO)."""

    xs: np.ndarray
    bytes_sent: np.ndarray
    bytes_received: np.ndarray
    state: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def xbar(self) -> np.ndarray:
        """(T+1, d): the average model x̄^t."""
        return self.xs.mean(axis=1)

    def consensus_distance(self) -> np.ndarray:
        """(T+1,): (1/n) Σ_i ‖x_i^t − x̄^t‖²."""
        dev = self.xs - self.xbar[:, None, :]
        return (dev ** 2).sum(axis=2).mean(axis=1)


def _as_mixing(W: Any, n: int) -> Any:
    from decomp.topologies import MixingMatrix

    M = W if isinstance(W, MixingMatrix) else MixingMatrix(np.asarray(W, dtype=np.float64))
    return M.validate(n)


def _rows(M: Any) -> list[tuple[float, list[tuple[int, float]]]]:
    """Per node i: (W_ii, [(j, W_ij) for neighbours j ascending]) with Python floats."""
    out = []
    for i in range(M.n):
        js, ws = M.neighbors(i)
        out.append((float(M.self_weight(i)), [(int(j), float(w)) for j, w in
                                              zip(js, ws, strict=True)]))
    return out


def mix(rows: list[tuple[float, list[tuple[int, float]]]], X: np.ndarray) -> np.ndarray:
    """W X summed row by row: W_ii X_i first, then W_ij X_j for j ascending."""
    out = np.empty_like(X)
    for i, (w_ii, nbrs) in enumerate(rows):
        acc = X[i] * w_ii
        for j, w in nbrs:
            acc = acc + X[j] * w
        out[i] = acc
    return out


def laplacian_mix(rows: list[tuple[float, list[tuple[int, float]]]], X: np.ndarray) -> np.ndarray:
    """(W − I) X as Σ_{j≠i} W_ij (X_j − X_i), summed from zero over j ascending."""
    out = np.zeros_like(X)
    for i, (_, nbrs) in enumerate(rows):
        acc = np.zeros_like(X[i])
        for j, w in nbrs:
            acc = acc + (X[j] - X[i]) * w
        out[i] = acc
    return out


def laplacian_update(rows: list[tuple[float, list[tuple[int, float]]]], S: np.ndarray,
                     Q: np.ndarray) -> np.ndarray:
    """S + (W − I) Q row by row: row i adds −(Σ_{j≠i} W_ij) Q_i, then W_ij Q_j for j
    ascending (the Σ over j from zero, ascending) — the order a node applies the decoded
    payloads in."""
    out = np.empty_like(S)
    for i, (_, nbrs) in enumerate(rows):
        acc = S[i] + (-sum(w for _, w in nbrs)) * Q[i]
        for j, w in nbrs:
            acc = acc + w * Q[j]
        out[i] = acc
    return out


def _grads(problems: Sequence[Problem], X: np.ndarray, seed: int, step: int,
           batch_size: int | None) -> np.ndarray:
    """(n, d): row i = ∇F_i(x_i; ξ_i^step) (full ∇f_i when batch_size is None)."""
    return np.stack([oracle_grad(p, X[i], seed=seed, worker=i, step=step, batch_size=batch_size)
                     for i, p in enumerate(problems)])


def _compress(C: Compressor, M: np.ndarray, seed: int, step: int, algorithm: str) -> np.ndarray:
    """(n, d): row i = C(M[i]) with node i's key; non-finite input is a divergence."""
    if not np.isfinite(M).all():
        raise DivergenceError(f"{algorithm}: non-finite value at step {step}", step=step,
                              algorithm=algorithm, quantity="compressor input")
    return np.stack([C.reference(M[i], Key(seed, i, step)) for i in range(M.shape[0])])


def simulate_decentralized(algorithm: str, problems: Sequence[Problem], x0: np.ndarray,
                           W: Any, *, lr: float, steps: int, seed: int = 0,
                           compressor: Compressor | None = None, batch_size: int | None = None,
                           gamma_c: float | None = None, t_start: int = 1,
                           X0: np.ndarray | None = None) -> DecentralizedTrace:
    """Run a decentralized ``algorithm`` for ``steps`` iterations on n = len(problems) nodes.

    W: a :class:`~decomp.topologies.MixingMatrix` or an (n, n) array (validated).
    X0: optional (n, d) per-node start (default: x0 on every node; replicas start at X0).
    Raises :class:`DivergenceError` at the first step with a non-finite value.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return _simulate(algorithm, problems, x0, W, lr=lr, steps=steps, seed=seed,
                         compressor=compressor, batch_size=batch_size, gamma_c=gamma_c,
                         t_start=t_start, X0=X0)


def _simulate(algorithm: str, problems: Sequence[Problem], x0: np.ndarray, W: Any, *,
              lr: float, steps: int, seed: int, compressor: Compressor | None,
              batch_size: int | None, gamma_c: float | None, t_start: int,
              X0: np.ndarray | None) -> DecentralizedTrace:
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"decomp.sim has no decentralized algorithm {algorithm!r} "
                          f"(known: {', '.join(ALGORITHMS)})")
    C = compressor if compressor is not None else Identity()
    if algorithm in _UNBIASED_ONLY and not C.is_unbiased:
        raise ConfigError(f"{algorithm} needs an unbiased compressor; {C!r} is biased")
    if algorithm == "ecd_psgd" and t_start < 1:
        raise ConfigError(f"ecd_psgd: t_start must be >= 1, got {t_start}")
    if algorithm == "choco_sgd" and gamma_c is None:
        raise ConfigError("choco_sgd needs gamma_c")
    n, d, dt = len(problems), x0.size, x0.dtype
    M = _as_mixing(W, n)
    rows = _rows(M)
    deg = np.array([M.out_neighbors(i)[0].size for i in range(n)], dtype=np.int64)  # sends
    indeg = np.array([len(nb) for _, nb in rows], dtype=np.int64)  # receives
    X = np.tile(x0, (n, 1)) if X0 is None else np.array(X0, dtype=dt)
    xs = [X.copy()]
    sent = np.zeros(n, dtype=np.int64)
    dense = d * dt.itemsize
    per_msg = C.payload_bytes(d, dt)
    state: dict[str, np.ndarray] = {}
    Y = X.copy()  # ECD estimates ỹ, CHOCO replicas x̂
    S = laplacian_mix(rows, Y) if algorithm == "choco_sgd" else None  # CHOCO: (W − I) X̂

    for t in range(1, steps + 1):
        G = _grads(problems, X, seed, t, batch_size)
        if algorithm == "dpsgd":
            X = mix(rows, X) - lr * G
            sent += dense * deg
        elif algorithm == "dcd_psgd":
            half = mix(rows, X) - lr * G
            X = X + _compress(C, half - X, seed, t, algorithm)
            sent += per_msg * deg
        elif algorithm == "ecd_psgd":
            tau = t_start + t - 1
            new = mix(rows, Y) - lr * G
            Z = X * (1.0 - tau / 2) + new * (tau / 2)
            Y = Y * (1.0 - 2.0 / tau) + _compress(C, Z, seed, t, algorithm) * (2.0 / tau)
            X = new
            sent += per_msg * deg
        elif algorithm == "choco_sgd":
            assert gamma_c is not None
            assert S is not None
            half = X - lr * G
            Q = _compress(C, half - Y, seed, t, algorithm)
            Y = Y + Q
            S = laplacian_update(rows, S, Q)
            X = half + gamma_c * S
            sent += per_msg * deg
        elif algorithm == "allreduce_sgd":
            acc = np.zeros(d, dtype=dt)
            for i in range(n):
                acc = acc + G[i]
            X = np.tile(X[0] - lr * (acc / n), (n, 1))
            sent += dense
        else:  # allreduce_qsgd
            Q = _compress(C, G, seed, t, algorithm)
            acc = np.zeros(d, dtype=dt)
            for i in range(n):
                acc = acc + Q[i]
            X = np.tile(X[0] - lr * (acc / n), (n, 1))
            sent += per_msg
        if not np.isfinite(X).all():
            raise DivergenceError(f"{algorithm}: model became non-finite at step {t}", step=t,
                                  algorithm=algorithm, quantity="model x")
        xs.append(X.copy())
    if algorithm == "ecd_psgd":
        state["Y"] = Y
    elif algorithm == "choco_sgd":
        state["Xhat"] = Y
    if algorithm == "allreduce_sgd":
        received = sent.copy()  # the reduced vector
    elif algorithm == "allreduce_qsgd":
        received = sent * (n - 1)  # the others' payloads
    else:  # one payload of the same size from each in-neighbour
        received = sent // np.maximum(deg, 1) * indeg
    return DecentralizedTrace(np.stack(xs), sent, received, state)
