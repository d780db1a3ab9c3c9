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

Time-varying W_t (``W`` a :class:`~decomp.topologies.MixingSchedule`): the step producing
X^{t+1} uses W_t (t = 0, 1, …; the schedule is periodic). dpsgd mixes with W_t as above;
dcd_psgd and choco_sgd keep per-edge replicas (:mod:`decomp.algorithms.edge_replica`, one
symmetric peer per step): node i holds A_i[k] = x̂_{i→k} and B_i[k] = x̂_{k→i} for every peer k
of a period, all starting at X0, and with its current peer k(i) and
M_i = Σ_{k current} W_t[i,k] (B_i[k] − A_i[k]) (from zero, k ascending)::

    dcd_psgd:   V_i = W_t[i,i] X_i + Σ_{k current} W_t[i,k] B_i[k] − γ G_i (self first, k
                ascending);  Q_i = C(V_i − A_i[k(i)]);  A_i[k(i)] += Q_i;
                B_i[j] += Q_j for the current source j of i;   X_i ← A_i[k(i)]
    choco_sgd:  V_i = X_i − γ G_i;  the same round;  X_i ← V_i + γ_c M_i (M_i after the round)

ecd_psgd refuses a schedule (its estimates need every step's payload).

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
    period = _period(W, n, algorithm)
    rows_t = [_rows(M) for M in period]
    deg_t = [np.array([M.out_neighbors(i)[0].size for i in range(n)], dtype=np.int64)
             for M in period]  # sends
    indeg_t = [np.array([len(nb) for _, nb in rows], dtype=np.int64) for rows in rows_t]
    rows, deg, indeg = rows_t[0], deg_t[0], indeg_t[0]
    X = np.tile(x0, (n, 1)) if X0 is None else np.array(X0, dtype=dt)
    xs = [X.copy()]
    sent = np.zeros(n, dtype=np.int64)
    received = np.zeros(n, dtype=np.int64)
    dense = d * dt.itemsize
    per_msg = C.payload_bytes(d, dt)
    state: dict[str, np.ndarray] = {}
    Y = X.copy()  # ECD estimates ỹ, CHOCO replicas x̂
    edges = _Edges(W, X) if _is_schedule(W) and algorithm in _EDGE_ALGORITHMS else None
    # CHOCO on a static W: S = (W − I) X̂
    S = laplacian_mix(rows, Y) if algorithm == "choco_sgd" and edges is None else None

    for t in range(1, steps + 1):
        k = (t - 1) % len(period)
        rows, deg, indeg = rows_t[k], deg_t[k], indeg_t[k]
        G = _grads(problems, X, seed, t, batch_size)
        if edges is not None:
            X = edges.step(algorithm, rows, X, G, lr=lr, C=C, seed=seed, t=t, gamma_c=gamma_c)
            sent += per_msg * deg
            received += per_msg * indeg
        elif algorithm == "dpsgd":
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
        if algorithm in _GOSSIP and edges is None:  # one payload from each in-neighbour
            received += (dense if algorithm == "dpsgd" else per_msg) * indeg
        if not np.isfinite(X).all():
            raise DivergenceError(f"{algorithm}: model became non-finite at step {t}", step=t,
                                  algorithm=algorithm, quantity="model x")
        xs.append(X.copy())
    if algorithm == "ecd_psgd":
        state["Y"] = Y
    elif edges is not None:
        state.update(edges.arrays())
    elif algorithm == "choco_sgd":
        state["Xhat"] = Y
    if algorithm == "allreduce_sgd":
        received = sent.copy()  # the reduced vector
    elif algorithm == "allreduce_qsgd":
        received = sent * (n - 1)  # the others' payloads
    # else: one payload from each in-neighbour of W_t, counted step by step
    return DecentralizedTrace(np.stack(xs), sent, received, state)


_EDGE_ALGORITHMS = ("dcd_psgd", "choco_sgd")
_GOSSIP = ("dpsgd", "dcd_psgd", "ecd_psgd", "choco_sgd")


def _is_schedule(W: Any) -> bool:
    from decomp.topologies import is_schedule

    return is_schedule(W)


def _period(W: Any, n: int, algorithm: str) -> list[Any]:
    """[W] for one W; [W_0, …, W_{τ−1}] for a schedule (each validated without the
    connectivity check: a one-peer W_t is disconnected, the period is not)."""
    if not _is_schedule(W):
        return [_as_mixing(W, n)]
    if algorithm == "ecd_psgd":
        raise ConfigError("ecd_psgd cannot run on a time-varying schedule: its estimates need "
                          "every step's payload from every neighbour")
    if W.n != n:
        raise ConfigError(f"the schedule is for n = {W.n} nodes but there are {n} problems")
    out = [W(k).validate(n, connected=False) for k in range(W.period)]
    if algorithm in _EDGE_ALGORITHMS:
        for M in out:
            if not M.symmetric or any(M.degrees > 1):
                raise ConfigError(f"{algorithm} on a schedule keeps per-edge replicas and needs "
                                  f"one symmetric peer per step (one-peer-hypercube); "
                                  f"{M.name} is not")
    return out


class _Edges:
    """Per-edge replicas of every node (module doc): A[i][p] = x̂_{i→k}, B[i][p] = x̂_{k→i}
    for k = peers[i][p], all from X0."""

    def __init__(self, W: Any, X: np.ndarray) -> None:
        n = X.shape[0]
        self.peers = [tuple(W.peers(i)) for i in range(n)]
        self.slot = [{k: p for p, k in enumerate(ps)} for ps in self.peers]
        self.A = [np.tile(X[i], (len(ps), 1)) for i, ps in enumerate(self.peers)]
        self.B = [np.stack([X[k] for k in ps]) if ps else np.empty((0, X.shape[1]), X.dtype)
                  for ps in self.peers]

    def mixing(self, rows: list[tuple[float, list[tuple[int, float]]]],
               X: np.ndarray) -> np.ndarray:
        """(n, d): row i = Σ_{k current} W_t[i,k] (B_i[k] − A_i[k]), from zero, ascending."""
        out = np.zeros_like(X)
        for i, (_, nbrs) in enumerate(rows):
            acc = np.zeros_like(X[i])
            for k, w in nbrs:
                p = self.slot[i][k]
                acc = acc + (self.B[i][p] - self.A[i][p]) * w
            out[i] = acc
        return out

    def step(self, algorithm: str, rows: list[tuple[float, list[tuple[int, float]]]],
             X: np.ndarray, G: np.ndarray, *, lr: float, C: Compressor, seed: int, t: int,
             gamma_c: float | None) -> np.ndarray:
        """X^{t+1} of dcd_psgd / choco_sgd on W_t (``rows``), replicas updated in place."""
        if algorithm == "dcd_psgd":  # DCD's mix, peers' values from the edge replicas
            V = np.empty_like(X)
            for i, (w_ii, nbrs) in enumerate(rows):
                acc = X[i] * w_ii
                for k, w in nbrs:
                    acc = acc + self.B[i][self.slot[i][k]] * w
                V[i] = acc
            V = V - lr * G
        else:
            V = X - lr * G
        peer = [nbrs[0][0] if nbrs else None for _, nbrs in rows]
        D = np.zeros_like(X)
        for i, k in enumerate(peer):
            if k is not None:
                D[i] = V[i] - self.A[i][self.slot[i][k]]
        Q = _compress(C, D, seed, t, algorithm)
        for i, k in enumerate(peer):
            if k is not None:  # W_t symmetric: k's peer is i
                self.A[i][self.slot[i][k]] = self.A[i][self.slot[i][k]] + Q[i]
                self.B[i][self.slot[i][k]] = self.B[i][self.slot[i][k]] + Q[k]
        if algorithm == "dcd_psgd":
            return np.stack([V[i] if k is None else self.A[i][self.slot[i][k]].copy()
                             for i, k in enumerate(peer)])
        assert gamma_c is not None
        return V + gamma_c * self.mixing(rows, X)

    def arrays(self) -> dict[str, np.ndarray]:
        """``A`` and ``B`` as (n, P, d) arrays (every node has P peers on one-peer schedules)."""
        if len({len(p) for p in self.peers}) != 1:
            return {}
        return {"A": np.stack(self.A), "B": np.stack(self.B)}
