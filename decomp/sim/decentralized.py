"""Pieces shared by the decentralized references (:mod:`decomp.sim.gossip`,
:mod:`decomp.sim.beer`): the result type, products with W summed in the MPI nodes' order, the
row-wise oracle and compressor calls on n × d arrays (row i = node i's x_i), W or the period
of a schedule W_t, per-edge replicas, and :func:`drive`, the loop every gossip reference runs.

Products with W are summed row by row in the order the MPI nodes use (W_ii first, then the
neighbours ascending; for (W − I) X̂⁰ the sum Σ_{j≠i} W_ij (x̂_j − x̂_i) from zero; CHOCO's
update of S row i adds −(Σ_{j≠i} W_ij) q_i first, then W_ij q_j for j ascending, as a node
does when its own payload and then its neighbours' are decoded), so the references agree with
the MPI runtime to the last bit wherever the compressor's reference does.

Time-varying W_t (``W`` a :class:`~decomp.topologies.MixingSchedule`): the step producing
X^{t+1} uses W_t (t = 0, 1, …; the schedule is periodic). A method declaring
``per_edge_replicas`` keeps them as :class:`Edges` (:mod:`decomp.algorithms.edge_replica`: one
symmetric peer per step); node i holds A_i[k] = x̂_{i→k} and B_i[k] = x̂_{k→i} for every peer k
of a period, all starting at X0. A method declaring ``refuses_schedule`` is refused one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decomp.compress import Compressor
from decomp.errors import ConfigError, DivergenceError
from decomp.problems import Problem, oracle_grad
from decomp.rng import Key


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


#: per node i: (W_ii, [(j, W_ij) for the neighbours j ascending]), Python floats
Rows = list[tuple[float, list[tuple[int, float]]]]


def _rows(M: Any) -> Rows:
    """Per node i: (W_ii, [(j, W_ij) for neighbours j ascending]) with Python floats."""
    out = []
    for i in range(M.n):
        js, ws = M.neighbors(i)
        out.append((float(M.self_weight(i)), [(int(j), float(w)) for j, w in
                                              zip(js, ws, strict=True)]))
    return out


def mix(rows: Rows, X: np.ndarray) -> np.ndarray:
    """W X summed row by row: W_ii X_i first, then W_ij X_j for j ascending."""
    out = np.empty_like(X)
    for i, (w_ii, nbrs) in enumerate(rows):
        acc = X[i] * w_ii
        for j, w in nbrs:
            acc = acc + X[j] * w
        out[i] = acc
    return out


def laplacian_mix(rows: Rows, X: np.ndarray) -> np.ndarray:
    """(W − I) X as Σ_{j≠i} W_ij (X_j − X_i), summed from zero over j ascending."""
    out = np.zeros_like(X)
    for i, (_, nbrs) in enumerate(rows):
        acc = np.zeros_like(X[i])
        for j, w in nbrs:
            acc = acc + (X[j] - X[i]) * w
        out[i] = acc
    return out


def laplacian_update(rows: Rows, S: np.ndarray,
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




def start(x0: np.ndarray, n: int, X0: np.ndarray | None) -> np.ndarray:
    """(n, d): X0 (a per-node start) or x0 on every row."""
    return np.tile(x0, (n, 1)) if X0 is None else np.array(X0, dtype=x0.dtype)


def mixing_period(alg: Any, W: Any, n: int, *, edges: bool | None = None) -> list[Any]:
    """[W] (validated) for one W; [W_0, …, W_{τ−1}] for a schedule, each validated without
    the connectivity check (a one-peer W_t is disconnected, the period is not), after the
    method's own checks (``alg.check_mixing``: ``refuses_schedule``, a symmetric W). edges:
    per-edge replicas, which need one symmetric peer per step (None: the class's
    ``per_edge_replicas``)."""
    from decomp.topologies import is_schedule

    if not is_schedule(W):
        return [_as_mixing(W, n)]
    alg.check_mixing(W)
    if W.n != n:
        raise ConfigError(f"the schedule is for n = {W.n} nodes but there are {n} problems")
    out = [W(k).validate(n, connected=False) for k in range(W.period)]
    if alg.per_edge_replicas if edges is None else edges:
        for M in out:
            if not M.symmetric or any(M.degrees > 1):
                raise ConfigError(f"{alg.name} on a schedule keeps per-edge replicas and needs "
                                  f"one symmetric peer per step (one-peer-hypercube); "
                                  f"{M.name} is not")
    return out


#: one step of a gossip reference: (t, W_t's rows, X^t, G^t) -> X^{t+1}
Update = Callable[[int, Rows, np.ndarray, np.ndarray], np.ndarray]


def drive(alg: Any, problems: Sequence[Problem], x0: np.ndarray, W: Any, *, steps: int,
          seed: int, X0: np.ndarray | None, msg_bytes: int, update: Update,
          edges: bool | None = None) -> DecentralizedTrace:
    """The loop of a gossip reference: for t = 1..T, G = ∇F(X; ξ^t) (row i with τ =
    ``alg.batch_size``), X ← ``update(t, rows of W_{t−1}, X, G)``; every node sends
    ``msg_bytes`` to each out-neighbour of W_{t−1} and receives as many from each
    in-neighbour. Raises :class:`DivergenceError` at the first non-finite X. state: {} (the
    caller adds its own)."""
    n = len(problems)
    period = mixing_period(alg, W, n, edges=edges)
    rows_t = [_rows(M) for M in period]
    deg_t = [np.array([M.out_neighbors(i)[0].size for i in range(n)], dtype=np.int64)
             for M in period]
    indeg_t = [np.array([len(nb) for _, nb in rows], dtype=np.int64) for rows in rows_t]
    X = start(x0, n, X0)
    xs = [X.copy()]
    sent = np.zeros(n, dtype=np.int64)
    received = np.zeros(n, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, steps + 1):
            k = (t - 1) % len(period)
            X = update(t, rows_t[k], X, _grads(problems, X, seed, t, alg.batch_size))
            sent += msg_bytes * deg_t[k]
            received += msg_bytes * indeg_t[k]
            if not np.isfinite(X).all():
                raise DivergenceError(f"{alg.name}: model became non-finite at step {t}",
                                      step=t, algorithm=alg.name, quantity="model x")
            xs.append(X.copy())
    return DecentralizedTrace(np.stack(xs), sent, received, {})


class Edges:
    """Per-edge replicas of every node (module doc): A[i][p] = x̂_{i→k}, B[i][p] = x̂_{k→i}
    for k = peers[i][p], all from X (n, d)."""

    def __init__(self, W: Any, X: np.ndarray) -> None:
        n = X.shape[0]
        self.peers = [tuple(W.peers(i)) for i in range(n)]
        self.slot = [{k: p for p, k in enumerate(ps)} for ps in self.peers]
        self.A = [np.tile(X[i], (len(ps), 1)) for i, ps in enumerate(self.peers)]
        self.B = [np.stack([X[k] for k in ps]) if ps else np.empty((0, X.shape[1]), X.dtype)
                  for ps in self.peers]

    def mixing(self, rows: Rows, X: np.ndarray) -> np.ndarray:
        """(n, d): row i = Σ_{k current} W_t[i,k] (B_i[k] − A_i[k]), from zero, ascending."""
        out = np.zeros_like(X)
        for i, (_, nbrs) in enumerate(rows):
            acc = np.zeros_like(X[i])
            for k, w in nbrs:
                p = self.slot[i][k]
                acc = acc + (self.B[i][p] - self.A[i][p]) * w
            out[i] = acc
        return out

    def round(self, rows: Rows, V: np.ndarray, C: Compressor, seed: int, t: int,
              algorithm: str) -> list[int | None]:
        """The exchange on W_t's edges for the vectors V (n, d): with k(i) node i's current
        peer, A_i[k] += C(V_i − A_i[k]) and B_i[k] += node k's payload. Returns k(i) (None:
        no peer at this step)."""
        peer = [nbrs[0][0] if nbrs else None for _, nbrs in rows]
        D = np.zeros_like(V)
        for i, k in enumerate(peer):
            if k is not None:
                D[i] = V[i] - self.A[i][self.slot[i][k]]
        Q = _compress(C, D, seed, t, algorithm)
        for i, k in enumerate(peer):
            if k is not None:  # W_t symmetric: k's peer is i
                self.A[i][self.slot[i][k]] = self.A[i][self.slot[i][k]] + Q[i]
                self.B[i][self.slot[i][k]] = self.B[i][self.slot[i][k]] + Q[k]
        return peer

    def arrays(self) -> dict[str, np.ndarray]:
        """``A`` and ``B`` as (n, P, d) arrays (every node has P peers on one-peer schedules)."""
        if len({len(p) for p in self.peers}) != 1:
            return {}
        return {"A": np.stack(self.A), "B": np.stack(self.B)}


__all__ = ["DecentralizedTrace", "Edges", "Rows", "drive", "laplacian_mix", "laplacian_update",
           "mix", "mixing_period", "start"]
