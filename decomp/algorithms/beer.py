"""BEER (Zhao, Li, Li, Richtárik, Chi, NeurIPS 2022, Algorithm 1): gradient tracking with
compressed replicas of both the models and the trackers; any contractive C (Top-k allowed).

Matrix form (columns of the paper's X ∈ R^{d×n} are nodes; here node i holds its column)::

    X ← X + γ H (W − I) − η V
    H ← H + C(X − H)                          node i sends C(x_i − h_i)
    V ← V + γ G (W − I) + ∇F(X; ξ^{t+1}) − ∇F(X_prev; ξ^t)
    G ← G + C(V − G)                          node i sends C(v_i − g_i)

γ = ``consensus_step``, η = ``lr`` (step size). Start (the paper and the authors'
code): x_i^0 = x^0, h_i^0 = g_i^0 = 0 (every replica too), v_i^0 = ∇f_i(x^0), the full
local gradient as in the authors' code, also with ``batch_size`` (so Σ_i v_i^0 = Σ_i ∇f_i);
later steps use ∇F_i(x_i; ξ_i^t) (minibatch of ``batch_size`` rows drawn from (seed, i, t),
or the full ∇f_i). v_i tracks the network's mean gradient: (1/n) Σ_i v_i^t =
(1/n) Σ_i ∇F_i(x_i^t; ξ_i^t) at every t (exactly for a symmetric W, up to rounding).

Replicas (as CHOCO's, :func:`decomp.algorithms.replica.replica_round`): RH (1 + deg, d) with
RH[0] = h_i and RH[1 + k] = h_j of the k-th in-neighbour j (ascending rank), RG the same for
g. The two mixing terms S_H = Σ_{j≠i} W_ij (h_j − h_i) (row i of H(W − I)) and S_G are kept
in the state and updated from the decoded payloads (S ← S − (Σ_{j≠i} W_ij) q_i, then
S ← S + W_ij q_j for j ascending), so a Top-k payload touches k entries. The reference
(:mod:`decomp.sim.beer`) applies the same updates in the same order: equal bit for bit.

Randomness: the h-payload of step t uses node i's key ``Key(seed, i, t)``, the g-payload
``Key(seed, i + n, t)`` (``env.key(t, Stream.SECOND)``, as EF21+'s second payload), the minibatch
(seed, i, t, MINIBATCH).

Wire: two compressed payloads per neighbour per step, 2 × ``C.payload_bytes(d, dtype)``.

Time-varying W_t (``[topology] schedule = "one-peer-hypercube"``; the directed one-peer
exponential is refused, W_t must be symmetric): a node's copy of h_j would go stale while j
is not its current peer, so h and g are kept per directed edge
(:mod:`decomp.algorithms.edge_replica`: AH[p] = ĥ_{i→k}, BH[p] = ĥ_{k→i} for every peer k of
a period, both ends equal bit for bit; AG, BG likewise), all starting at 0. Each step first
brings the current edge up to date, then mixes over it::

    ĥ_{i→k} += C(x_i^t − ĥ_{i→k}),  ĥ_{k→i} += C(x_k^t − ĥ_{k→i})    (edge_round, key stream 0)
    ĝ_{i→k} += C(v_i^t − ĝ_{i→k}),  ĝ_{k→i} += C(v_k^t − ĝ_{k→i})    (edge_round, stream 1)
    x_i^{t+1} = (x_i^t + γ W_t[i,k] (ĥ_{k→i} − ĥ_{i→k})) − η v_i^t
    v_i^{t+1} = (v_i^t + γ W_t[i,k] (ĝ_{k→i} − ĝ_{i→k})) + (∇F_i(x_i^{t+1}) − ∇F_i(x_i^t))

i.e. the paper's rounds H^t = H^{t−1} + C(X^t − H^{t−1}) moved from the end of step t to the
start of step t + 1 (on a static W the same iterates; the first step sends nothing since
H^0 = G^0 = 0), so that the mixing with W_t reads the replicas just exchanged on W_t's edge
rather than ones up to τ − 1 steps old. With C = identity and γ = 1 this is gradient tracking
on W_t: X ← W_t X − η V, V ← W_t V + ∇F(X) − ∇F(X_prev). The tracker mean is preserved (the
edge terms cancel in the sum over nodes for a symmetric W_t).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from decomp.algorithms.base import check_consensus_step
from decomp.algorithms.decentralized_base import DecentralizedAlgorithm, Env
from decomp.algorithms.edge_replica import edge_mix, edge_round
from decomp.algorithms.env import Stream
from decomp.algorithms.replica import replica_round
from decomp.compress import Compressor
from decomp.kernels.fused import all_finite, axpy, descend
from decomp.theory import StepsScaling


class BEERState(NamedTuple):
    """Node i's BEER state at step t; every array has x^0's dtype."""

    t: int
    x: np.ndarray  # x_i^t (d,)
    v: np.ndarray  # v_i^t (d,): gradient tracker
    grad_prev: np.ndarray  # ∇F_i(x_i^t; ξ_i^t) (d,): the gradient v_i^t last added
    RH: np.ndarray  # (1 + deg, d): RH[0] = h_i^t, RH[1 + k] = h of the k-th in-neighbour
    RG: np.ndarray  # (1 + deg, d): RG[0] = g_i^t, RG[1 + k] = g of the k-th in-neighbour
    SH: np.ndarray  # (d,) Σ_{j≠i} W_ij (h_j^t − h_i^t): row i of H(W − I)
    SG: np.ndarray  # (d,) Σ_{j≠i} W_ij (g_j^t − g_i^t): row i of G(W − I)
    bad: int  # first step at which this node met a non-finite value (0: none)

    @property
    def h(self) -> np.ndarray:
        """h_i^t (d,): the compressed public copy of x_i (a view of RH[0])."""
        return self.RH[0]

    @property
    def g(self) -> np.ndarray:
        """g_i^t (d,): the compressed public copy of v_i (a view of RG[0])."""
        return self.RG[0]


class BEEREdgeState(NamedTuple):
    """Node i's BEER state on a time-varying schedule (module doc): P =
    ``len(env.transport.peers)``, the peers of a period ascending; every array has x^0's
    dtype."""

    t: int
    x: np.ndarray  # x_i^t (d,)
    v: np.ndarray  # v_i^t (d,)
    grad_prev: np.ndarray  # ∇F_i(x_i^t; ξ_i^t) (d,)
    AH: np.ndarray  # (P, d): AH[p] = ĥ_{i→peers[p]}, node i's h as that peer knows it
    BH: np.ndarray  # (P, d): BH[p] = ĥ_{peers[p]→i}, that peer's h as node i knows it
    AG: np.ndarray  # (P, d): ĝ_{i→peers[p]}
    BG: np.ndarray  # (P, d): ĝ_{peers[p]→i}
    bad: int


class BEER(DecentralizedAlgorithm):
    """BEER with consensus step ``consensus_step`` (γ in the paper) in (0, 1]; η is the
    env's ``lr``."""

    name = "beer"
    reference = "decomp.sim.beer:simulate_beer"
    #: the paper's compression assumption E‖C(x) − x‖² ≤ (1 − α)‖x‖² (wrap unbiased in scaled)
    requirement = "contractive"
    needs_symmetric_w = ("its analysis (Zhao et al. 2022) takes W symmetric and doubly "
                         "stochastic; its γ and rate come from W's spectral gap")

    renamed = {"gamma": "consensus_step"}
    decodes_per_payload = 2  # into the replica and into the kept mixing sum S

    def __init__(self, compressor: Compressor | None = None, *,
                 consensus_step: float | None = None, batch_size: int | None = None,
                 lr: float | None = None, **renamed: Any) -> None:
        super().__init__(compressor, batch_size=batch_size, lr=lr, **renamed)
        self.consensus_step = check_consensus_step(self.name, consensus_step)

    def init(self, env: Env, x0: np.ndarray) -> BEERState | BEEREdgeState:
        self.check(x0.size)
        # v_i^0 = ∇f_i(x^0): the full local gradient (authors' code), whatever batch_size
        v = np.array(env.problem.grad(x0), dtype=x0.dtype)
        if env.transport.time_varying:
            P = len(env.transport.peers)
            return BEEREdgeState(0, x0.copy(), v, v.copy(),
                                 *(np.zeros((P, x0.size), x0.dtype) for _ in range(4)), 0)
        rows = env.transport.indegree + 1
        return BEERState(0, x0.copy(), v, v.copy(), np.zeros((rows, x0.size), x0.dtype),
                         np.zeros((rows, x0.size), x0.dtype), np.zeros_like(x0),
                         np.zeros_like(x0), 0)

    def _step(self, env: Env, state: BEERState | BEEREdgeState
              ) -> BEERState | BEEREdgeState:
        if isinstance(state, BEEREdgeState):
            return self._edge_step(env, state)
        tp, x, v = env.transport, state.x, state.v
        SH, SG = state.SH, state.SG
        step = state.t + 1
        t = x.dtype.type
        wsum = -sum(tp.weights[j] for j in tp.sources)  # −Σ_{j≠i} W_ij, ascending

        def own(S: np.ndarray) -> Any:  # S_i −= (Σ_j W_ij) q_i
            return lambda C, p: C.decode_add(p, S, wsum)

        def received(S: np.ndarray) -> Any:  # S_i += W_ij q_j
            return lambda C, p, k, j: C.decode_add(p, S, tp.weights[j])

        # x_i^{t+1} = x_i^t + γ [H^t (W − I)]_i − η v_i^t, as (x + γ S_H) − η v
        ok = axpy(x, t(self.consensus_step), SH)
        ok &= descend(x, t(env.lr), v)
        tmp = env.scratch("tmp", x)
        # h_i += C(x_i^{t+1} − h_i) here and on every neighbour; h_j += C(...) here
        bad = replica_round(env, self.compressor, np.subtract(x, state.RH[0], out=tmp),
                            state.RH, step, state.bad, on_own=own(SH), on_received=received(SH))
        grad = self.grad(env, x, step)  # ∇F_i(x_i^{t+1}; ξ_i^{t+1})
        # v_i^{t+1} = (v_i^t + γ [G^t (W − I)]_i) + (∇F_i(x^{t+1}) − ∇F_i(x^t)): the
        # difference first, it is small where the gradients have settled
        ok &= axpy(v, t(self.consensus_step), SG)
        v += np.subtract(grad, state.grad_prev, out=tmp)
        np.copyto(state.grad_prev, grad)
        # g_i += C(v_i^{t+1} − g_i) everywhere, with the second stream's key
        bad = replica_round(env, self.compressor, np.subtract(v, state.RG[0], out=tmp),
                            state.RG, step, bad, on_own=own(SG), on_received=received(SG),
                            key=env.key(step, Stream.SECOND))
        if bad == 0 and not (ok and all_finite(v)):
            bad = step
        return state._replace(t=step, bad=bad)

    def _edge_step(self, env: Env, state: BEEREdgeState) -> BEEREdgeState:
        """The step on W_t with per-edge replicas (module doc)."""
        x, v, bad = state.x, state.v, state.bad
        step = state.t + 1
        t = x.dtype.type
        if state.t > 0:  # H^0 = G^0 = 0 are given: the first step has nothing to exchange
            bad, _ = edge_round(env, self.compressor, x, state.AH, state.BH, step, bad)
            bad, _ = edge_round(env, self.compressor, v, state.AG, state.BG, step, bad,
                                key=env.key(step, Stream.SECOND))
        mixed = env.scratch("mixed", x)
        ok = axpy(x, t(self.consensus_step), edge_mix(env, state.AH, state.BH, mixed))
        ok &= descend(x, t(env.lr), v)
        ok &= axpy(v, t(self.consensus_step), edge_mix(env, state.AG, state.BG, mixed))
        grad = self.grad(env, x, step)
        v += np.subtract(grad, state.grad_prev, out=mixed)
        np.copyto(state.grad_prev, grad)
        if bad == 0 and not (ok and all_finite(v)):
            bad = step
        return state._replace(t=step, bad=bad)

    def replicas(self, env: Env, state: Any) -> dict[int, np.ndarray]:
        """{j: this node's copy of h_j} (the model replicas; self included on a static W; on
        a schedule {k: ĥ_{k→i}} for every peer k of a period)."""
        if isinstance(state, BEEREdgeState):
            return {k: state.BH[p] for p, k in enumerate(env.transport.peers)}
        return {j: state.RH[k] for k, j in enumerate((env.rank, *env.transport.sources))}

    # ---- declarations (decomp.netmodel) ----
    steps_scaling = StepsScaling("delta", False, "heuristic: step size ~ delta "
                                 "(docs/algorithms.md)", True)
    pricing_options = {"consensus_step": 1.0}  # the consensus step does not change the traffic
    exchanges = ("C(x - h)", "C(v - g)")  # two compressed replica rounds per step
