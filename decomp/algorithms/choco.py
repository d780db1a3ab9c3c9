"""CHOCO-SGD (Koloskova, Stich, Jaggi, ICML 2019, Algorithm 2): compressed gossip with a
consensus step size γ_c
(``consensus_step``); biased (contractive) compressors allowed.

Node i keeps replicas x̂_j of its neighbours and x̂_i of itself, all starting at x^0 (the
authors' code; the paper sets x̂^0 = 0 with the suggested x^0 = 0, the same thing). Step::

    x_i^{t+1/2} = x_i^t − γ ∇F_i(x_i^t; ξ_i^t)
    q_i^t       = C(x_i^{t+1/2} − x̂_i^t)          send q_i^t to the neighbours
    every holder: x̂_i^{t+1} = x̂_i^t + q_i^t
    x_i^{t+1}   = x_i^{t+1/2} + γ_c Σ_{j≠i} W_ij (x̂_j^{t+1} − x̂_i^{t+1})

With C = identity and γ_c = 1 this is X^{t+1} = W (X^t − γ G^t) (adapt then combine).

Sparse-aware mixing: node i keeps the mixing sum S_i = Σ_{j≠i} W_ij (x̂_j − x̂_i) in its state
and updates it from the decoded payloads instead of recomputing it from the replicas::

    S_i ← S_i − (Σ_{j≠i} W_ij) q_i           then, for j ascending:  S_i ← S_i + W_ij q_j

so a Top-k step touches k entries per payload, and x_i^{t+1} = x_i^{t+1/2} + γ_c S_i is one fused
pass. The reference (:mod:`decomp.sim.decentralized`) keeps S the same way, in the same order,
so the iterates stay equal bit for bit. S_i carries the rounding of its updates (it equals the
recomputed sum up to a few ulp per step, not exactly).

Wire: one compressed payload q_i per neighbour per step (``C.payload_bytes(d, dtype)``).

Time-varying W_t (``[topology] schedule = "one-peer-hypercube"``): per-edge replicas
(:mod:`decomp.algorithms.edge_replica`): q_i = C(x_i^{t+1/2} − x̂_{i→k}) for the current peer
k, x̂_{i→k} += q_i on both ends, x̂_{k→i} += q_k, and x_i^{t+1} = x_i^{t+1/2} +
γ_c Σ_k W_t[i,k] (x̂_{k→i} − x̂_{i→k}) (the mixing sum recomputed from the current edges: it
changes with W_t, so S is not kept).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from decomp.algorithms.base import check_consensus_step
from decomp.algorithms.decentralized_base import DecentralizedAlgorithm, Env
from decomp.algorithms.edge_replica import (
    EdgeState,
    edge_mix,
    edge_replicas,
    edge_round,
    init_edges,
)
from decomp.algorithms.replica import replica_round
from decomp.compress import Compressor
from decomp.kernels.fused import all_finite, axpy, descend
from decomp.theory import StepsScaling


class CHOCOState(NamedTuple):
    t: int
    x: np.ndarray  # x_i^t (d,)
    R: np.ndarray  # (1 + deg, d): R[0] = x̂_i, R[1 + k] = x̂ of the k-th neighbour (ascending)
    bad: int  # first step at which this node met a non-finite value (0: none)
    S: np.ndarray | None = None  # (d,) mixing sum Σ_{j≠i} W_ij (x̂_j − x̂_i) (None: zeros)


class CHOCOSGD(DecentralizedAlgorithm):
    """CHOCO-SGD with consensus step size ``consensus_step`` (γ in the paper, γ_c here) in
    (0, 1]."""

    name = "choco_sgd"
    reference = "decomp.sim.gossip:simulate_choco_sgd"
    per_edge_replicas = True  # on a schedule: edge_replica.py
    needs_symmetric_w = ("its analysis (Koloskova et al. 2019, Definition 1) takes W symmetric; "
                         "γ_c and the rate come from W's spectral gap δ and β = ‖I − W‖₂")

    renamed = {"gamma_c": "consensus_step"}
    decodes_per_payload = 2  # into the replica and into the kept mixing sum S

    def __init__(self, compressor: Compressor | None = None, *,
                 consensus_step: float | None = None, batch_size: int | None = None,
                 lr: float | None = None, **renamed: Any) -> None:
        super().__init__(compressor, batch_size=batch_size, lr=lr, **renamed)
        self.consensus_step = check_consensus_step(self.name, consensus_step)

    def init(self, env: Env, x0: np.ndarray) -> CHOCOState | EdgeState:
        self.check(x0.size)
        if env.transport.time_varying:
            return init_edges(env, x0)
        R = np.tile(x0, (env.transport.indegree + 1, 1))
        return CHOCOState(0, x0.copy(), R, 0, np.zeros_like(x0))

    def _step(self, env: Env, state: CHOCOState | EdgeState) -> CHOCOState | EdgeState:
        if isinstance(state, EdgeState):
            return self._edge_step(env, state)
        tp, x, R = env.transport, state.x, state.R
        S = state.S if state.S is not None else np.zeros_like(x)
        step = state.t + 1
        t = x.dtype.type
        ok = descend(x, t(env.lr), self.grad(env, x, step))  # x_i^{t+1/2}
        diff = np.subtract(x, R[0], out=env.scratch("tmp", x))  # x_i^{t+1/2} − x̂_i
        wsum = -sum(tp.weights[j] for j in tp.sources)  # −Σ_{j≠i} W_ij, ascending

        def own(C: Any, p: np.ndarray) -> None:  # S_i −= (Σ_j W_ij) q_i
            C.decode_add(p, S, wsum)

        def received(C: Any, p: np.ndarray, k: int, j: int) -> None:  # S_i += W_ij q_j
            C.decode_add(p, S, tp.weights[j])

        # q_i = C(diff); x̂_i += q_i here and on every neighbour, x̂_j += q_j here
        bad = replica_round(env, self.compressor, diff, R, step, state.bad, on_own=own,
                            on_received=received)
        ok &= axpy(x, t(self.consensus_step), S)  # x_i^{t+1} = x_i^{t+1/2} + γ_c S_i
        if bad == 0 and not ok:
            bad = step
        return CHOCOState(step, x, R, bad, S)

    def _edge_step(self, env: Env, state: EdgeState) -> EdgeState:
        """The step on W_t with per-edge replicas (module doc, edge_replica)."""
        x, A, B = state.x, state.A, state.B
        tmp = env.scratch("tmp", x)
        step = state.t + 1
        g = self.grad(env, x, step)
        x -= np.multiply(g, env.lr, out=tmp)  # x_i^{t+1/2}
        bad, _ = edge_round(env, self.compressor, x, A, B, step, state.bad)
        edge_mix(env, A, B, tmp)  # Σ_k W_ik (x̂_{k→i} − x̂_{i→k}), replicas after the round
        x += np.multiply(tmp, self.consensus_step, out=tmp)  # x_i^{t+1}
        if bad == 0 and not all_finite(x):
            bad = step
        return EdgeState(step, x, A, B, bad)

    def replicas(self, env: Env, state: CHOCOState | EdgeState) -> dict[int, np.ndarray]:
        if isinstance(state, EdgeState):
            return edge_replicas(env, state)
        return super().replicas(env, state)

    # ---- declarations (decomp.netmodel) ----
    steps_scaling = StepsScaling("delta2", True, "Koloskova et al. ICLR 2020, Thm 4.1: "
                                 "transient ~ 1/delta^2", False)
    pricing_options = {"consensus_step": 1.0}  # the consensus step does not change the traffic
