"""PowerGossip (Vogels, Karimireddy, Jaggi, NeurIPS 2020, "Practical Low-Rank Communication
Compression in Decentralized Deep Learning"; the authors' code, github.com/epfml/powergossip,
``algorithms.PowerGossip`` inside ``OnlyOnLargeParameters`` and the ``DPSGD`` driver): gossip
of the *difference* between neighbours' models, compressed per edge by one warm-started power
iteration step of rank r on every weight matrix.

The model's tensors (:class:`~decomp.layout.Layout`, ``env.layout``; None = one flat slot)
are split as in :mod:`decomp.algorithms.powersgd`: a tensor of shape (m, ...) is the matrix
X ∈ R^{m×k}, k = prod(shape[1:]), of rank r' = min(m, k, r); with the default
``min_compression_rate = 0`` every tensor of two or more dimensions is compressed (the
authors' ``p.ndim > 1``), 1-D and 0-D tensors gossip dense. Node i, step t → t + 1 (γ =
``lr``, γ_c = ``consensus_step``, the authors' ``diffusion_rate``, W_t the step's W)::

    g_i = ∇F_i(x_i^t; ξ_i^t)
    dense tensors:  x_i ← W_ii x_i^t + Σ_j W_ij x_j^t                  (the authors' SimpleGossip)
    compressed, for s = 1..power_iterations (none at t = 0: every x_i^0 is the same), on every
    edge {i, j} of W_t with its own P_ij (m×r'), Q_ij (k×r'), the same on both ends, and
    c = power_iterations + (power steps the edge has done):
        c odd:   Q ← orth(Q);  send X_i Q;     P ← (X_hi − X_lo) Q      (a right product)
        c even:  P ← orth(P);  send X_iᵀ P;    Q ← (X_hi − X_lo)ᵀ P     (a left product)
        x_i ← x_i + σ_ij W_ij γ_c P Qᵀ,  σ_ij = +1 if i < j else −1     (neighbours ascending)
    x_i^{t+1} = x_i − γ g_i

hi/lo: the larger/smaller node of the edge; both ends form the difference from the same two
messages (own and received), so P, Q are equal bit for bit on both ends and node j adds
exactly what node i subtracts: with W symmetric the gossip keeps Σ_i x_i (up to rounding).
The power iteration alternates between right and left products from step to step, warm
started from the edge's previous factor (``warm_start = False``: the factor to orthogonalise
is redrawn every time); orth is Gram–Schmidt (:func:`~decomp.algorithms.powersgd.
orthogonalise`; the authors divide by ‖col‖ + 1e-8, decomp by ‖col‖ with a zero column left
zero). P and Q start as standard normal draws from the edge's key at step 0
(:func:`~decomp.algorithms.env.edge_key`), so both ends hold the same ones.

Wire, per edge direction and power step: r'·m (c odd) or r'·k (c even) values per compressed
matrix — r'·(m + k) every two steps — plus, in the first power step, the dense tensors; one
message per edge (:meth:`~decomp.comm.protocols.NeighborTransport.swap`: the message differs
per edge). On a time-varying W_t (one-peer hypercube) each edge keeps its P, Q and its count
of power steps between meetings, so the alternation is per edge.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from decomp.algorithms.decentralized_base import DecentralizedAlgorithm, Env
from decomp.algorithms.env import edge_key
from decomp.algorithms.powersgd import LowRankPlan, low_rank_plan, orthogonalise
from decomp.comm.pattern import Call, CodecOp
from decomp.compress import Compressor
from decomp.errors import ConfigError
from decomp.kernels.fused import descend
from decomp.layout import Layout, layout_of
from decomp.rng import Purpose, key_generator
from decomp.theory import StepsScaling

__all__ = ["PowerGossip", "PowerGossipState", "draw_edge", "factor_sizes", "right_product"]


def factor_sizes(plan: LowRankPlan) -> tuple[int, int, int]:
    """(dense values, Σ m·r', Σ k·r') of a plan: a message's dense part and one edge's P, Q."""
    dense = sum(size for _, size, _ in plan.dense)
    return dense, sum(b.m * b.r for b in plan.blocks), sum(b.k * b.r for b in plan.blocks)


def p_at(plan: LowRankPlan, b: Any) -> int:
    """Offset of block b's P in an edge's flat P row."""
    return b.p_at - factor_sizes(plan)[0]


def right_product(power_iterations: int, uses: int) -> bool:
    """The edge's next power step is a right product (X Q) iff power_iterations + uses is odd
    (the authors' global iteration counter, per edge)."""
    return (power_iterations + int(uses)) % 2 == 1


def draw_edge(out: np.ndarray, seed: int, n: int, i: int, j: int, step: int) -> None:
    """Fill ``out`` (one flat factor, or an edge's P then Q concatenated) with standard normals
    from the key of edge {i, j} at ``step`` — the same on both ends."""
    gen = key_generator(edge_key(seed, n, i, j, step), Purpose.COMPRESS)
    out[:] = gen.standard_normal(out.size)


class PowerGossipState(NamedTuple):
    t: int
    x: np.ndarray  # x_i^t (d,)
    P: np.ndarray  # (peers, Σ m·r'): each edge's left factors (rows: env.transport.peers)
    Q: np.ndarray  # (peers, Σ k·r'): each edge's right factors
    uses: np.ndarray  # (peers,) int64: power steps done on each edge
    bad: int  # first step at which this node met a non-finite value (0: none)


class PowerGossip(DecentralizedAlgorithm):
    """PowerGossip (module doc). rank: r; power_iterations: power steps (messages) per step
    (the authors' ``num_iterations``, 1 or 2); warm_start: keep each edge's factors between
    steps; consensus_step: γ_c (the authors' ``diffusion_rate``, 1 by default: no tuning);
    min_compression_rate: compress a matrix only where r'·(m + k)·rate < m·k (0: every tensor
    of two or more dimensions, as the authors)."""

    name = "powergossip"
    reference = "decomp.sim.powergossip:simulate_powergossip"
    uses_compressor = False
    needs_symmetric_w = ("the difference P Qᵀ of an edge is added on one end and subtracted on "
                         "the other with the same weight W_ij = W_ji")

    def __init__(self, compressor: Compressor | None = None, *, rank: int = 1,
                 power_iterations: int = 1, warm_start: bool = True,
                 consensus_step: float = 1.0, min_compression_rate: float = 0.0,
                 batch_size: int | None = None, lr: float | None = None,
                 **unknown: Any) -> None:
        super().__init__(compressor, batch_size=batch_size, lr=lr, **unknown)
        for key, v in (("rank", rank), ("power_iterations", power_iterations)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{self.name}: {key} must be an integer >= 1, got {v!r}")
        for key, v, low in (("consensus_step", consensus_step, "> 0 (1: the paper's value)"),
                            ("min_compression_rate", min_compression_rate, ">= 0")):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or \
                    not math.isfinite(v) or v < 0 or (key == "consensus_step" and v == 0):
                raise ConfigError(f"{self.name}: {key} must be a finite number {low}, got "
                                  f"{v!r}")
        if not isinstance(warm_start, (bool, np.bool_)):
            raise ConfigError(f"{self.name}: warm_start must be true or false, got "
                              f"{warm_start!r}")
        self.rank = int(rank)
        self.power_iterations = int(power_iterations)
        self.warm_start = bool(warm_start)
        self.consensus_step = float(consensus_step)
        self.min_compression_rate = float(min_compression_rate)

    def plan(self, layout: Layout | None, d: int) -> LowRankPlan:
        """The split of ``layout`` (None: one flat slot of d, all dense) for these options."""
        return low_rank_plan(layout_of(d, layout), self.rank, self.min_compression_rate)

    def _plan(self, env: Env, d: int) -> LowRankPlan:
        layout = env.layout if env.layout is not None else getattr(env.problem, "layout", None)
        layout = layout if isinstance(layout, Layout) else None
        return env.workspace.keep(f"powergossip_plan_{d}", lambda: self.plan(layout, d))

    def init(self, env: Env, x0: np.ndarray) -> PowerGossipState:
        tp = env.transport
        _, np_, nq = factor_sizes(self._plan(env, x0.size))
        peers = tp.peers
        P = np.empty((len(peers), np_), dtype=x0.dtype)
        Q = np.empty((len(peers), nq), dtype=x0.dtype)
        pq = np.empty(np_ + nq, dtype=x0.dtype)
        for s, j in enumerate(peers):
            draw_edge(pq, env.seed, env.n, tp.rank, j, 0)
            P[s], Q[s] = pq[:np_], pq[np_:]
        return PowerGossipState(0, x0.copy(), P, Q, np.zeros(len(peers), dtype=np.int64), 0)

    def _step(self, env: Env, state: PowerGossipState) -> PowerGossipState:
        tp, x, P, Q, uses = env.transport, state.x, state.P, state.Q, state.uses
        step, dt, me = state.t + 1, x.dtype, tp.rank
        g = self.grad(env, x, step)
        plan = self._plan(env, x.size)
        nd, np_, nq = factor_sizes(plan)
        compress = state.t > 0 and bool(plan.blocks)
        rounds = self.power_iterations if compress else (1 if nd else 0)
        coef = env.scratch("powergossip_coef", shape=(self.rank,), dtype=dt)
        longest = nd + sum(max(b.m, b.k) * b.r for b in plan.blocks)
        for s in range(rounds):
            msgs: dict[int, np.ndarray] = {}
            for j in tp.sources:
                e = tp.slot(j)
                right = right_product(self.power_iterations, uses[e])
                buf = env.scratch(f"powergossip_msg_{j}", shape=(longest,), dtype=dt)
                at = 0
                if s == 0:
                    for off, size, _ in plan.dense:
                        buf[at:at + size] = x[off:off + size]
                        at += size
                if compress:
                    if not self.warm_start:  # redraw the factor to orthogonalise
                        draw_edge(Q[e] if right else P[e], env.seed, env.n, me, j,
                                  self.power_iterations + int(uses[e]))
                    for b in plan.blocks:
                        X = x[b.offset:b.offset + b.m * b.k].reshape(b.m, b.k)
                        F = self._factor(plan, b, P[e], Q[e], right)
                        orthogonalise(F, coef)
                        rows = b.m if right else b.k
                        np.matmul(X if right else X.T, F,
                                  out=buf[at:at + rows * b.r].reshape(rows, b.r))
                        at += rows * b.r
                msgs[j] = buf[:at].view(np.uint8)
            got = tp.swap(msgs)
            if s == 0 and nd:  # x_i ← W_ii x_i + Σ_j W_ij x_j on the dense tensors
                self._mix_dense(env, x, plan, got)
            if compress:
                self._apply(env, x, plan, msgs, got, P, Q, uses, nd if s == 0 else 0)
        ok = descend(x, dt.type(env.lr), g)  # x_i^{t+1} = x_i − γ g_i
        bad = state.bad or (0 if ok else step)
        return PowerGossipState(step, x, P, Q, uses, bad)

    @staticmethod
    def _factor(plan: LowRankPlan, b: Any, Pe: np.ndarray, Qe: np.ndarray,
                right: bool) -> np.ndarray:
        """Block b's Q (k×r', right product) or P (m×r') as a view into the edge's row."""
        if right:
            return Qe[b.q_at:b.q_at + b.k * b.r].reshape(b.k, b.r)
        at = p_at(plan, b)
        return Pe[at:at + b.m * b.r].reshape(b.m, b.r)

    @staticmethod
    def _mix_dense(env: Env, x: np.ndarray, plan: LowRankPlan,
                   got: dict[int, np.ndarray]) -> None:
        tp, dt = env.transport, x.dtype
        acc = env.scratch("powergossip_dense", like=x)
        tmp = env.scratch("powergossip_tmp", like=x)
        at = 0
        for off, size, _ in plan.dense:
            a, t = acc[off:off + size], tmp[off:off + size]
            np.multiply(x[off:off + size], tp.self_weight, out=a)
            for j in tp.sources:  # ascending
                np.multiply(got[j].view(dt)[at:at + size], tp.weights[j], out=t)
                np.add(a, t, out=a)
            x[off:off + size] = a
            at += size

    def _apply(self, env: Env, x: np.ndarray, plan: LowRankPlan, msgs: dict[int, np.ndarray],
               got: dict[int, np.ndarray], P: np.ndarray, Q: np.ndarray, uses: np.ndarray,
               skip: int) -> None:
        """Per current edge (ascending): the difference of the two messages into P or Q, then
        x_i += σ W_ij γ_c P Qᵀ per block; the edge's count of power steps + 1."""
        tp, dt, me = env.transport, x.dtype, env.transport.rank
        for j in tp.sources:
            e = tp.slot(j)
            right = right_product(self.power_iterations, uses[e])
            own, their = msgs[j].view(dt)[skip:], got[j].view(dt)[skip:]
            dest = P[e] if right else Q[e]  # the factors in message order: the row itself
            hi, lo = (own, their) if me > j else (their, own)
            np.subtract(hi[:dest.size], lo[:dest.size], out=dest)  # (X_hi − X_lo) F
            c = (-1 if me > j else 1) * tp.weights[j] * self.consensus_step
            for b in plan.blocks:
                at = p_at(plan, b)
                U = env.scratch(f"powergossip_u_{b.offset}", shape=(b.m, b.k), dtype=dt)
                np.matmul(P[e, at:at + b.m * b.r].reshape(b.m, b.r),
                          Q[e, b.q_at:b.q_at + b.k * b.r].reshape(b.k, b.r).T, out=U)
                np.multiply(U, c, out=U)
                sl = x[b.offset:b.offset + b.m * b.k]
                np.add(sl, U.reshape(-1), out=sl)
            uses[e] += 1

    # ---- declarations (decomp.netmodel) ----
    steps_scaling = StepsScaling("delta2", True, "heuristic: as CHOCO-SGD (compressed gossip; "
                                 "Vogels et al. 2020 bound the consensus error through W's "
                                 "spectral gap)", True)

    def comm_pattern(self, d: int, n: int, degree: int = 2, *, master: str = "shared",
                     dtype: Any = np.float64, layout: Layout | None = None) -> list[Call]:
        """Per step and edge direction: the dense tensors and r'·m or r'·k values per matrix
        in the first power step (their mean, r'·(m + k)/2: the two alternate), the low-rank
        factor alone in each further one (none at step 1)."""
        size = np.dtype(dtype).itemsize
        nd, np_, nq = factor_sizes(self.plan(layout, d))
        low = (np_ + nq) / 2 * size
        calls = [Call("exchange", nd * size + low, degree, n, what="dense tensors, P or Q")]
        if low:
            calls += [Call("exchange", low, degree, n, what="P or Q")] * \
                (self.power_iterations - 1)
        return calls

    def codec_ops(self, n: int, degree: int = 2, *, master: str = "shared") -> list[CodecOp]:
        """None priced: the power iteration's products are booked as compute."""
        return []
