"""PowerSGD (Vogels, Karimireddy, Jaggi, NeurIPS 2019, "PowerSGD: Practical Low-Rank Gradient
Compression for Distributed Optimization", Algorithms 1 and 2): rank-r power-iteration
compression of each weight tensor, warm-started, with error feedback, over two all-reduces.

Every worker all-reduces (like GD; no master aggregation). The model's tensors
(:class:`~decomp.layout.Layout`, ``env.layout``; None = one flat slot) are split as DDP's
``powerSGD_hook`` splits them: a tensor of shape (m, ...) is the matrix M ∈ R^{m×k},
k = prod(shape[1:]), of rank r' = min(m, k, r); it is *compressed* iff
r'·(m + k)·``min_compression_rate`` < m·k, else (and always for 1-D and 0-D tensors) it goes
*dense*. Worker i, step t → t + 1 (γ = ``lr``, g_i = ∇f_i(x^t), e_i its error, e_i^0 = 0)::

    t < start_iter:  x^{t+1} = x^t − γ (1/n) Σ_i g_i                 (dense warm-up, = GD)
    otherwise, per compressed tensor (M_i = its block of g_i + e_i, Q the shared k×r')
        Q   ← orth(Q)                       warm start: last step's Q (fresh draw if not)
        P   = Σ_i M_i Q                     all-reduce #1 (with the dense tensors' sum)
        P̂   = orth(P)                       Gram–Schmidt, column by column
        Q   = (1/n) Σ_i M_iᵀ P̂              all-reduce #2 (kept for the next step)
        M̂   = P̂ Qᵀ   (= P̂ P̂ᵀ M̄, M̄ the mean of the M_i)
        e_i ← M_i − M̂
    per dense tensor: its update is (1/n) Σ_i g_i (no error: nothing is lost)
    x^{t+1} = x^t − γ U,  U the M̂'s and dense means in place

orth is DDP's Gram–Schmidt (normalise column j, subtract its projection from the later
columns; a zero column stays zero instead of DDP's NaN). P is orthogonalised as the sum
(the mean's scale does not change P̂). The initial Q is a standard normal draw from the run's
shared LOWRANK stream at step 0 (:func:`initial_q`), the same on every rank.

Wire per compressed step and worker: one all-reduce of (Σ_dense size + Σ_comp m·r') values and
one of Σ_comp k·r' values (:meth:`PowerSGD.comm_pattern`); a warm-up step all-reduces d values.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from decomp.algorithms.base import Env, MasterWorkerAlgorithm, diverged
from decomp.algorithms.dense import allreduce_descend
from decomp.algorithms.env import Stream, stream_key
from decomp.comm.pattern import Call, CodecOp, master_world
from decomp.errors import ConfigError
from decomp.kernels.fused import descend
from decomp.layout import Layout, layout_of
from decomp.rng import Purpose, key_generator


class Block(NamedTuple):
    """A compressed tensor: x[offset:offset + m·k] as M (m, k), rank r; its P at
    ``p_at`` in the first all-reduce's buffer, its Q at ``q_at`` in the flat Q vector."""

    offset: int
    m: int
    k: int
    r: int
    p_at: int
    q_at: int


class LowRankPlan(NamedTuple):
    """Which tensors are compressed (:class:`Block`) and which go dense ((offset, size,
    position in the first buffer)); ``first``: values of the first all-reduce (dense + P's),
    ``second``: values of the second (the Q's)."""

    blocks: tuple[Block, ...]
    dense: tuple[tuple[int, int, int], ...]
    first: int
    second: int


def low_rank_plan(layout: Layout, rank: int, min_compression_rate: float) -> LowRankPlan:
    """DDP's split of the tensors of ``layout`` (module doc): compressed iff 2-D or more and
    r'·(m + k)·min_compression_rate < m·k with r' = min(m, k, rank)."""
    blocks: list[tuple[int, int, int, int]] = []
    dense: list[tuple[int, int]] = []
    for s in layout:
        if len(s.shape) >= 2 and s.size > 0:
            m, k = s.shape[0], math.prod(s.shape[1:])
            r = min(m, k, rank)
            if r * (m + k) * min_compression_rate < m * k:
                blocks.append((s.offset, m, k, r))
                continue
        dense.append((s.offset, s.size))
    pos, out_dense = 0, []
    for off, size in dense:
        out_dense.append((off, size, pos))
        pos += size
    qpos, out_blocks = 0, []
    for off, m, k, r in blocks:
        out_blocks.append(Block(off, m, k, r, pos, qpos))
        pos += m * r
        qpos += k * r
    return LowRankPlan(tuple(out_blocks), tuple(out_dense), pos, qpos)


def draw_q(q: np.ndarray, plan: LowRankPlan, seed: int, n: int, step: int) -> None:
    """Fill the flat Q vector with standard normals from the shared LOWRANK stream at
    ``step`` (block after block, each a (k, r) draw in C order): the same on every rank."""
    gen = key_generator(stream_key(seed, None, n, step, Stream.LOWRANK), Purpose.COMPRESS)
    for b in plan.blocks:
        q[b.q_at:b.q_at + b.k * b.r] = gen.standard_normal(b.k * b.r)


def orthogonalise(A: np.ndarray, coef: np.ndarray) -> None:
    """Gram–Schmidt on the columns of A (rows, r) in place, as DDP's
    ``_orthogonalize_gram_schmidt``: column j ← column j / ‖column j‖ (a zero column stays
    zero), then every later column loses its component along it. coef: (≥ r,) scratch."""
    r = A.shape[1]
    for j in range(r):
        col = A[:, j]
        norm = np.sqrt(np.dot(col, col))
        if norm > 0:
            col /= norm
        if j + 1 < r:
            c = coef[:r - j - 1]
            np.matmul(col, A[:, j + 1:], out=c)
            for i in range(r - j - 1):
                A[:, j + 1 + i] -= col * c[i]


class PowerSGDState(NamedTuple):
    t: int
    x: np.ndarray  # x^t, (d,), on every rank
    e: np.ndarray  # e_i, (d,): this worker's error (zero on dense tensors and on a master)
    q: np.ndarray  # the compressed tensors' Q's, flat (Σ k·r,), the same on every rank


class PowerSGD(MasterWorkerAlgorithm):
    """PowerSGD with rank ``rank`` power iteration per weight tensor (module doc).

    rank: r (DDP's ``matrix_approximation_rank``, default 1); start_iter: dense steps before
    compressing (DDP's ``start_powerSGD_iter``; here 0 by default); min_compression_rate:
    compress a tensor only where it saves more than this factor (DDP's, default 2);
    warm_start: keep Q between steps (else a fresh draw every step).
    """

    name = "powersgd"
    reference = "decomp.sim.powersgd:simulate_powersgd"
    uses_compressor = False
    downlink = "allreduce"
    torch_driver = "update"  # a step is the gradient at x^t, then x^{t+1}

    def __init__(self, *, rank: int = 1, start_iter: int = 0, min_compression_rate: float = 2.0,
                 warm_start: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
            raise ConfigError(f"{self.name}: rank must be an integer >= 1, got {rank!r}")
        if isinstance(start_iter, bool) or not isinstance(start_iter, (int, np.integer)) \
                or start_iter < 0:
            raise ConfigError(f"{self.name}: start_iter must be an integer >= 0, got "
                              f"{start_iter!r}")
        if isinstance(min_compression_rate, bool) or \
                not isinstance(min_compression_rate, (int, float, np.floating)) or \
                not min_compression_rate >= 0:
            raise ConfigError(f"{self.name}: min_compression_rate must be a number >= 0, got "
                              f"{min_compression_rate!r}")
        if not isinstance(warm_start, (bool, np.bool_)):
            raise ConfigError(f"{self.name}: warm_start must be true or false, got "
                              f"{warm_start!r}")
        self.rank = int(rank)
        self.start_iter = int(start_iter)
        self.min_compression_rate = float(min_compression_rate)
        self.warm_start = bool(warm_start)

    def plan(self, layout: Layout | None, d: int) -> LowRankPlan:
        """The split of ``layout`` (None: one flat slot of d) for this object's options."""
        return low_rank_plan(layout_of(d, layout), self.rank, self.min_compression_rate)

    def _plan(self, env: Env, d: int) -> LowRankPlan:
        layout = env.layout if env.layout is not None else getattr(env.problem, "layout", None)
        layout = layout if isinstance(layout, Layout) else None
        return env.workspace.keep(f"powersgd_plan_{d}", lambda: self.plan(layout, d))

    def init(self, env: Env, x0: np.ndarray) -> PowerSGDState:
        plan = self._plan(env, x0.size)
        q = np.empty(plan.second, dtype=x0.dtype)
        draw_q(q, plan, env.seed, env.n, 0)
        return PowerSGDState(0, x0.copy(), np.zeros_like(x0), q)

    def _step(self, env: Env, state: PowerSGDState) -> PowerSGDState:
        x, e, q, t = state.x, state.e, state.q, state.t
        tp, worker = env.transport, env.transport.is_worker
        if worker:
            g = self.grad(env, x, t + 1)
        else:  # a dedicated master joins the all-reduces with zeros
            g = env.scratch("zeros", x)
            g.fill(0)
        plan = self._plan(env, x.size)
        if t < self.start_iter or not plan.blocks:  # dense: GD's step
            if not allreduce_descend(tp, x, g, env.lr, env.n):
                raise diverged(t + 1, self.name)
            return PowerSGDState(t + 1, x, e, q)
        M, buf, coef = self.buffers(env, x)
        if not self.warm_start:
            draw_q(q, plan, env.seed, env.n, t + 1)
        self.first_phase(M, buf, coef, g, e, q, plan.blocks, plan.dense, 0, x.size)
        tp.allreduce_sum(buf)  # dense sums and P = Σ_i M_i Q
        return self.second_phase(env, state, M, buf, coef, plan)

    def buffers(self, env: Env, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The step's scratch: M (d,), the first all-reduce's buffer, Gram–Schmidt's coef."""
        plan = self._plan(env, x.size)
        return (env.scratch("powersgd_m", x),
                env.scratch("powersgd_first", shape=(plan.first,), dtype=x.dtype),
                env.scratch("powersgd_coef", shape=(self.rank,), dtype=x.dtype))

    @staticmethod
    def first_phase(M: np.ndarray, buf: np.ndarray, coef: np.ndarray, g: np.ndarray,
                    e: np.ndarray, q: np.ndarray, blocks: Any, dense: Any, lo: int,
                    hi: int) -> None:
        """Before all-reduce #1, for the tensors in x[lo:hi] (``blocks``, ``dense``: theirs):
        M_i = g_i + e_i, the dense tensors into ``buf``, Q ← orth(Q) and P = M_i Q into
        ``buf``. Run on all of x at once (the blocking step) or bucket by bucket during
        backward (:mod:`decomp.torch.overlap_compressed`): the same values."""
        np.add(g[lo:hi], e[lo:hi], out=M[lo:hi])  # M_i = g_i + e_i (e_i = 0 on dense tensors)
        for off, size, at in dense:
            buf[at:at + size] = M[off:off + size]
        for b in blocks:
            Q = q[b.q_at:b.q_at + b.k * b.r].reshape(b.k, b.r)
            orthogonalise(Q, coef)
            np.matmul(M[b.offset:b.offset + b.m * b.k].reshape(b.m, b.k), Q,
                      out=buf[b.p_at:b.p_at + b.m * b.r].reshape(b.m, b.r))

    def second_phase(self, env: Env, state: PowerSGDState, M: np.ndarray, buf: np.ndarray,
                     coef: np.ndarray, plan: LowRankPlan) -> PowerSGDState:
        """After all-reduce #1 (``buf`` holds the sums): P̂ = orth(P), all-reduce #2 of the
        Q's, M̂ = P̂ Qᵀ, the errors and x^{t+1}."""
        x, e, q, t = state.x, state.e, state.q, state.t
        tp, worker = env.transport, env.transport.is_worker
        dt = x.dtype.type
        for b in plan.blocks:
            P = buf[b.p_at:b.p_at + b.m * b.r].reshape(b.m, b.r)
            orthogonalise(P, coef)
            np.matmul(M[b.offset:b.offset + b.m * b.k].reshape(b.m, b.k).T, P,
                      out=q[b.q_at:b.q_at + b.k * b.r].reshape(b.k, b.r))
        tp.allreduce_sum(q)  # Σ_i M_iᵀ P̂
        np.divide(q, dt(env.n), out=q)
        U = env.scratch("powersgd_update", x)
        for off, size, at in plan.dense:
            np.divide(buf[at:at + size], dt(env.n), out=U[off:off + size])
        for b in plan.blocks:
            sl = slice(b.offset, b.offset + b.m * b.k)
            np.matmul(buf[b.p_at:b.p_at + b.m * b.r].reshape(b.m, b.r),
                      q[b.q_at:b.q_at + b.k * b.r].reshape(b.k, b.r).T,
                      out=U[sl].reshape(b.m, b.k))  # M̂ = P̂ Qᵀ
            if worker:
                np.subtract(M[sl], U[sl], out=e[sl])  # e_i = M_i − M̂
        if not descend(x, dt(env.lr), U):
            raise diverged(t + 1, self.name)
        return PowerSGDState(t + 1, x, e, q)

    # ---- declarations: traffic and codec work ----
    def comm_pattern(self, d: int, n: int, degree: int = 0, *, master: str = "shared",
                     dtype: Any = np.float64, layout: Layout | None = None) -> list[Call]:
        """A compressed step: one all-reduce of the dense tensors and the P's, one of the Q's
        ((Σ_dense size + Σ r'·(m + k)) values per worker); without a compressed tensor (one
        flat slot, layout None), one all-reduce of d values as GD."""
        world, _ = master_world(n, master)
        size = np.dtype(dtype).itemsize
        plan = self.plan(layout, d)
        if not plan.blocks:
            return [Call("allreduce", d * size, 1, world, what="dense gradient sum")]
        return [Call("allreduce", plan.first * size, 1, world, what="dense tensors and P's"),
                Call("allreduce", plan.second * size, 1, world, what="Q's")]

    def codec_ops(self, n: int, degree: int = 0, *, master: str = "shared") -> list[CodecOp]:
        """None priced: the power iteration's products are booked as compute."""
        return []
