"""EF21-PP: EF21 with partial participation (Fatkhullin, Sokolov, Gorbunov, Li, Richtárik 2021,
*EF21 with Bells & Whistles*, Algorithm 4).

EF21 with one change: each step only a random subset S_t of the workers computes and sends its
compressed difference; for the others c_i^t = 0 (they compute nothing and send nothing)::

    init:     g_i^0 = C(∇f_i(x^0)) ("compressed") or ∇f_i(x^0) ("full"); every worker sends
              g^0 = (1/n) Σ_i g_i^0
    master:   x^{t+1} = x^t − γ g^t
    i ∈ S_t:  c_i^t = C(∇f_i(x^{t+1}) − g_i^t);  g_i^{t+1} = g_i^t + c_i^t;  send c_i^t
    i ∉ S_t:  g_i^{t+1} = g_i^t                                  (c_i^t = 0, nothing sent)
    master:   g^{t+1} = g^t + (1/n) Σ_{i ∈ S_t} c_i^t            (the mean over all n workers)

S_t is a pure function of (seed, step) (:func:`decomp.participation.participants`), so every
rank and the reference know it without a message. ``sampling = "bernoulli"``: each worker
independently with probability p (the paper's Prob(i ∈ S_t) = p_i = p; S_t may be empty);
``"fixed"``: exactly m = max(1, ⌊p n⌋) workers uniformly without replacement (the authors'
experiments), so Prob(i ∈ S_t) = m/n. The theory step size (``lr = "theory"``) is the paper's
Theorem 7 with that probability (:func:`decomp.theory.ef21_pp_stepsize`).

Uplink (``transport``): ``"gatherv"`` — one ``Gatherv`` on the whole communicator with zero
counts for the workers outside S_t; ``"group"`` — a ``Gatherv`` on a sub-communicator of the
master and S_t (the others make no call). Either way only participants' bytes cross MPI.
Downlink (``downlink``) as for EF21: the re-encoded sum of the participants' payloads, or the
dense model.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from decomp.algorithms.base import (
    Env,
    Own,
    decode_add_or_poison,
    encode_or_poison,
    update_from_sum,
)
from decomp.algorithms.ef21 import EF21
from decomp.comm.pattern import Call
from decomp.compress import Compressor
from decomp.errors import ConfigError
from decomp.participation import SAMPLINGS, participants, participation_probability
from decomp.theory import ef21_pp_stepsize

TRANSPORTS = ("gatherv", "group")


class EF21PPState(NamedTuple):
    t: int
    x: np.ndarray  # x^t (d,), every rank
    g_local: np.ndarray | None  # g_i^t (d,) on a worker; None on a dedicated master
    g: np.ndarray | None  # g^t (d,): every rank (compressed downlink) or the master only


class EF21PP(EF21):
    """EF21-PP; ``p`` ∈ (0, 1], ``sampling`` in {"bernoulli", "fixed"}, ``transport`` in
    {"gatherv", "group"}; ``init``, ``downlink`` and ``batch_size`` as for EF21 (see the
    module doc)."""

    name = "ef21_pp"
    reference = "decomp.sim.ef21_variants:simulate_ef21_pp"

    def __init__(self, compressor: Compressor | None = None, *, p: float = 0.5,
                 sampling: str = "bernoulli", transport: str = "gatherv",
                 init: str = "compressed", downlink: str = "compressed",
                 batch_size: int | None = None, lr: float | None = None) -> None:
        super().__init__(compressor, init=init, downlink=downlink, batch_size=batch_size,
                         lr=lr)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0:
            raise ConfigError(f"{self.name}: p must be a probability in (0, 1], got {p!r}")
        if sampling not in SAMPLINGS:
            raise ConfigError(f"{self.name}: sampling must be one of {SAMPLINGS}, got "
                              f"{sampling!r}")
        if transport not in TRANSPORTS:
            raise ConfigError(f"{self.name}: transport must be one of {TRANSPORTS}, got "
                              f"{transport!r}")
        self.p = float(p)
        self.sampling = sampling
        self.transport = transport

    def probability(self, n: int) -> float:
        """Prob(i ∈ S_t) for n workers: p, or m/n for a fixed count m."""
        return participation_probability(n, self.p, self.sampling)

    def theory_stepsize(self, L: float, Ls: list[float], d: int) -> float:
        """The paper's EF21-PP step size (Theorem 7) for n = len(Ls) workers."""
        return ef21_pp_stepsize(L, Ls, self.alpha(d), self.probability(len(Ls)))

    def init(self, env: Env, x0: np.ndarray) -> EF21PPState:
        s = super().init(env, x0)  # every worker sends g_i^0 (step 0 is a full round)
        return EF21PPState(s.t, s.x, s.g_local, s.g)

    def _step(self, env: Env, state: EF21PPState) -> EF21PPState:
        x, g_local, g, tp = state.x, state.g_local, state.g, env.transport
        C = env.codec(self.compressor)
        step = state.t + 1
        self.descend(env, x, g, step)
        mask = participants(env.seed, step, env.n, self.p, self.sampling,
                            out=env.scratch("participants", shape=(env.n,), dtype=bool))
        payload = None
        if tp.is_worker and mask[tp.worker]:
            assert g_local is not None
            diff = np.subtract(self.grad(env, x, step), g_local, out=env.scratch("diff", x))
            payload = encode_or_poison(C, diff, env.key(step), C.payload_bytes(x.size, x.dtype))
        payloads: list[np.ndarray] | Own | None = Own(payload)  # tree: a non-participant's
        if self.aggregation_for(tp.aggregation) == "gather":   # sum is empty
            gather = tp.gather_subset if self.transport == "gatherv" else tp.gather_subset_group
            payloads = gather(payload, C.payload_bytes(x.size, x.dtype), mask)
        if payload is not None:
            assert g_local is not None
            decode_add_or_poison(C, payload, g_local)  # g_i += c_i
        update_from_sum(env, C, self.downlink, payloads, g, 1.0, x)
        return EF21PPState(step, x, g_local, g)

    # ---- declarations (decomp.netmodel) ----
    def expected_senders(self, n: int) -> float:
        return self.probability(n) * n

    def uplink(self, nbytes: int, n: int, fanin: int, world: int) -> Call:
        p = self.probability(n)
        return Call("gather", nbytes, p * fanin, world, what=f"participants' payloads (p = {p:g})")
