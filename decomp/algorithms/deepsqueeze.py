"""DeepSqueeze (Tang, Lian, Qiu, Yuan, Liu, Zhang 2019, "DeepSqueeze: Decentralization Meets
Error-Compensated Compression", Algorithm 1): gossip of error-compensated compressed models,
with consensus step size η (``consensus_step``); no replicas.

Node i, step t → t + 1 (γ = ``lr``, C the compressor, e_i its compression error, e_i^0 = 0)::

    x_i^{t+1/2} = x_i^t − γ ∇F_i(x_i^t; ξ_i^t)
    v_i         = x_i^{t+1/2} + e_i^t
    c_i         = C(v_i)                                  send c_i to the neighbours
    e_i^{t+1}   = v_i − c_i
    x_i^{t+1}   = x_i^{t+1/2} + η Σ_j (W_ij − δ_ij) c_j
    matrix form: X½ = X − γG;  V = X½ + E;  E ← V − C(V);  X ← X½ + η (W − I) C(V)

Unlike CHOCO-SGD it keeps no copy of its neighbours: each step mixes the compressed values
c_j of that step, so on a time-varying W_t (e.g. the one-peer hypercube) it simply uses
W_t's neighbours and weights — nothing per edge, nothing to catch up. With C = identity
(e = 0) and η = 1 it is D-PSGD's adapt-then-combine X ← W (X − γG); with W doubly stochastic
(columns summing to 1, so Σ_i (W − I)_ij = 0) the mixing moves no mass, whatever C: the mean
model takes the mean gradient step, x̄^{t+1} = x̄^t − γ (1/n) Σ_i ∇F_i(x_i^t; ξ_i^t).

Sparse-aware mixing: the mixing term M_i = (W_ii − 1) c_i + Σ_{j≠i} W_ij c_j is summed from
zero by decoding each payload into it (own first, then the neighbours ascending: a Top-k
payload touches k entries), then x_i ← x_i^{t+1/2} + η M_i in one fused pass. The reference
(:mod:`decomp.sim.deepsqueeze`) sums in the same order, so the iterates agree bit for bit.

Wire: one compressed payload c_i per out-neighbour per step (``C.payload_bytes(d, dtype)``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from decomp.algorithms.base import check_consensus_step
from decomp.algorithms.decentralized_base import DecentralizedAlgorithm, Env
from decomp.comm.pattern import CodecOp
from decomp.compress import Compressor
from decomp.kernels.fused import axpy, descend
from decomp.theory import StepsScaling


class DeepSqueezeState(NamedTuple):
    t: int
    x: np.ndarray  # x_i^t (d,)
    e: np.ndarray  # e_i^t (d,): the compression error carried to the next step
    bad: int  # first step at which this node met a non-finite value (0: none)


class DeepSqueeze(DecentralizedAlgorithm):
    """DeepSqueeze with consensus step size ``consensus_step`` (η in the paper) in (0, 1]."""

    name = "deepsqueeze"
    reference = "decomp.sim.deepsqueeze:simulate_deepsqueeze"
    #: the paper's ε-compression, E‖C(v) − v‖² ≤ ε²‖v‖² with ε < 1 (wrap unbiased in scaled)
    requirement = "contractive"
    needs_symmetric_w = ("its analysis (Tang et al. 2019, Assumption 1) takes W symmetric and "
                         "doubly stochastic; η and the rate come from W's spectral gap")

    def __init__(self, compressor: Compressor | None = None, *,
                 consensus_step: float | None = None, batch_size: int | None = None,
                 lr: float | None = None) -> None:
        super().__init__(compressor, batch_size=batch_size, lr=lr)
        self.consensus_step = check_consensus_step(self.name, consensus_step)

    def init(self, env: Env, x0: np.ndarray) -> DeepSqueezeState:
        self.check(x0.size)
        return DeepSqueezeState(0, x0.copy(), np.zeros_like(x0), 0)

    def _step(self, env: Env, state: DeepSqueezeState) -> DeepSqueezeState:
        tp, x, e = env.transport, state.x, state.e
        step = state.t + 1
        t = x.dtype.type
        ok = descend(x, t(env.lr), self.grad(env, x, step))  # x_i^{t+1/2}
        v = np.add(x, e, out=env.scratch("v", x))  # v_i = x_i^{t+1/2} + e_i
        C = env.codec(self.compressor)
        payload, bad = self.encode(env, v, step, state.bad)  # c_i, on the wire
        tp.exchange_start(payload, C.payload_bytes(x.size, x.dtype))
        np.copyto(e, v)
        C.decode_add(payload, e, -1.0)  # e_i = v_i − c_i, while the payloads travel
        M = env.scratch("mix", x)
        M[...] = 0
        C.decode_add(payload, M, tp.self_weight - 1.0)  # (W_ii − 1) c_i
        got: dict[int, Any] = tp.exchange_finish()
        for j in tp.sources:  # + W_ij c_j, j ascending
            C.decode_add(got[j], M, tp.weights[j])
        ok &= axpy(x, t(self.consensus_step), M)  # x_i^{t+1} = x_i^{t+1/2} + η M_i
        if bad == 0 and not ok:
            bad = step
        return DeepSqueezeState(step, x, e, bad)

    # ---- declarations (decomp.netmodel) ----
    steps_scaling = StepsScaling("delta2", True, "heuristic: as CHOCO-SGD (compressed gossip; "
                                 "Tang et al. 2019 bound the consensus error through W's "
                                 "spectral gap)", True)
    pricing_options = {"consensus_step": 1.0}  # the consensus step does not change the traffic
    exchanges = ("C(x + e)",)  # one compressed payload per neighbour, no replicas

    def codec_ops(self, n: int, degree: int = 2, *, master: str = "shared") -> list[CodecOp]:
        """One encode; 2 + k decodes: its own payload into e_i and into the mixing term, and
        each of the k neighbours' into the mixing term."""
        return [CodecOp("encode", self.compressor, 1),
                CodecOp("decode", self.compressor, 2 + degree, "own (e_i, mixing) + neighbours'")]
