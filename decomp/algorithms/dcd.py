"""DCD-PSGD (Tang, Gan, Zhang, Zhang, Liu, NeurIPS 2018, Algorithm 1): difference compression.

Node i keeps replicas x̂_j of its neighbours (x̂_i = x_i); all start at x^0. Step t → t + 1::

    x_i^{t+1/2} = Σ_j W_ij x̂_j^t − γ ∇F_i(x_i^t; ξ_i^t)
    z_i^t       = x_i^{t+1/2} − x_i^t
    x_i^{t+1}   = x_i^t + C(z_i^t)            send C(z_i^t) to the neighbours
    neighbours:   x̂_i^{t+1} = x̂_i^t + C(z_i^t)

Every holder applies the same decoded C(z_i^t) to the same value, so x̂_i equals x_i exactly on
every neighbour after every step; in matrix form X^{t+1/2} = W X^t − γ G^t, X^{t+1} = X^t +
C(X^{t+1/2} − X^t). C must be unbiased (the paper's analysis); the method is known to diverge
under aggressive compression (CHOCO-SGD paper: fine at 8 bits, fails at 2).

Wire: one compressed payload C(z_i) per neighbour per step (``C.payload_bytes(d, dtype)``).

Time-varying W_t (``[topology] schedule = "one-peer-hypercube"``): per-edge replicas
(:mod:`decomp.algorithms.edge_replica`): x_i^{t+1/2} = W_t[i,i] x_i + Σ_k W_t[i,k] x̂_{k→i}
− γ ∇F_i(x_i) (the step above, with peer k's value as node i last heard it), then
x̂_{i→k} += C(x_i^{t+1/2} − x̂_{i→k}) for the current peer k (sent to k) and x_i^{t+1} =
x̂_{i→k}: on a static W, where x̂_{i→k} = x_i, this is the step above.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from decomp.algorithms.decentralized_base import DecentralizedAlgorithm, Env, mix
from decomp.algorithms.edge_replica import (
    EdgeState,
    edge_replicas,
    edge_round,
    edge_rows,
    init_edges,
)
from decomp.algorithms.replica import replica_round
from decomp.kernels.fused import all_finite
from decomp.theory import StepsScaling


class DCDState(NamedTuple):
    t: int
    x: np.ndarray  # x_i^t (d,): a view of R[0]
    R: np.ndarray  # (1 + deg, d): R[0] = x_i, R[1 + k] = x̂ of the k-th neighbour (ascending)
    bad: int  # first step at which this node met a non-finite value (0: none)


class DCDPSGD(DecentralizedAlgorithm):
    """DCD-PSGD with an unbiased compressor C."""

    name = "dcd_psgd"
    reference = "decomp.sim.gossip:simulate_dcd_psgd"
    requirement = "unbiased"
    per_edge_replicas = True  # on a schedule: edge_replica.py
    needs_symmetric_w = ("its analysis (Tang et al. 2018, Assumption 1) takes W symmetric and "
                         "bounds the compression error by W's real eigenvalues")

    def init(self, env: Env, x0: np.ndarray) -> DCDState | EdgeState:
        self.check(x0.size)
        if env.transport.time_varying:
            return init_edges(env, x0)
        R = np.tile(x0, (env.transport.indegree + 1, 1))
        return DCDState(0, R[0], R, 0)

    def _step(self, env: Env, state: DCDState | EdgeState) -> DCDState | EdgeState:
        if isinstance(state, EdgeState):
            return self._edge_step(env, state)
        x, R = state.x, state.R
        acc, tmp = env.scratch("acc", x), env.scratch("tmp", x)
        step = state.t + 1
        g = self.grad(env, x, step)
        mix(env, acc, R[0], R[1:], g)  # x_i^{t+1/2} = Σ_j W_ij x̂_j − γ g, one pass
        z = np.subtract(acc, x, out=tmp)  # z_i^t
        # x_i (= R[0]) += C(z_i) here and on every neighbour; x̂_j += C(z_j) here
        bad = replica_round(env, self.compressor, z, R, step, state.bad)
        if bad == 0 and not all_finite(x):
            bad = step
        return DCDState(step, x, R, bad)

    def _edge_step(self, env: Env, state: EdgeState) -> EdgeState:
        """The step on W_t with per-edge replicas (module doc, edge_replica)."""
        x, A, B = state.x, state.A, state.B
        half = env.scratch("acc", x)
        step = state.t + 1
        g = self.grad(env, x, step)
        # x_i^{t+1/2} = W_ii x_i + Σ_k W_ik x̂_{k→i} − γ g (k: W_t's sources, ascending)
        mix(env, half, x, edge_rows(env, B), g)
        bad, p = edge_round(env, self.compressor, half, A, B, step, state.bad)
        x[...] = half if p is None else A[p]  # x_i^{t+1} = x̂_{i→k}: what peer k now holds
        if bad == 0 and not all_finite(x):
            bad = step
        return EdgeState(step, x, A, B, bad)

    def replicas(self, env: Env, state: DCDState | EdgeState) -> dict[int, np.ndarray]:
        if isinstance(state, EdgeState):
            return edge_replicas(env, state)
        return super().replicas(env, state)

    # ---- declarations (decomp.netmodel) ----
    steps_scaling = StepsScaling("p", True, "as D-PSGD (Koloskova et al. 2020), heuristic for "
                                 "DCD", True)
    dense_mixing = True
