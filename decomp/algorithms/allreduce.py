"""All-reduce baselines of the decentralized family (Tang et al. 2018, Section 5), run on the
same runner and transport as the gossip methods; every rank holds the same model.

- ``allreduce_sgd``: x^{t+1} = x^t − γ (1/n) Σ_i ∇F_i(x^t; ξ_i^t), the gradients summed by a
  dense MPI Allreduce (d · itemsize bytes contributed per rank per step): minibatch SGD (the
  master–worker ``sgd``) on the decentralized transport, the same step
  (:func:`~decomp.algorithms.dense.allreduce_descend`).
- ``allreduce_qsgd`` (any unbiased C; QSGD by default):
  x^{t+1} = x^t − γ (1/n) Σ_i C(∇F_i(x^t; ξ_i^t)); the payloads are all-gathered
  (``Allgather``, one ``C.payload_bytes(d, dtype)`` contribution per rank per step) and
  decoded in rank order on every rank.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from decomp.algorithms.decentralized_base import DecentralizedAlgorithm, Env, encode_or_zeros
from decomp.algorithms.dense import allreduce_descend
from decomp.comm.pattern import Call, CodecOp
from decomp.layout import Layout
from decomp.theory import TOPOLOGY_FREE

#: compressor of ``allreduce_qsgd`` when the config gives none
DEFAULT_QSGD = {"kind": "qsgd", "levels": 16}


class AllreduceState(NamedTuple):
    t: int
    x: np.ndarray  # x^t (d,), identical on every rank
    bad: int  # first step with a non-finite model (0: none)


class AllreduceSGD(DecentralizedAlgorithm):
    """Minibatch SGD with a dense Allreduce of the gradients."""

    name = "allreduce_sgd"
    reference = "decomp.sim.gossip:simulate_allreduce_sgd"
    uses_compressor = False
    gossip = False

    def init(self, env: Env, x0: np.ndarray) -> AllreduceState:
        return AllreduceState(0, x0.copy(), 0)

    def _step(self, env: Env, state: AllreduceState) -> AllreduceState:
        x, step = state.x, state.t + 1
        ok = allreduce_descend(env.transport, x, self.grad(env, x, step), env.lr, env.n)
        bad = state.bad or (0 if ok else step)
        return AllreduceState(step, x, bad)

    # ---- declarations (decomp.netmodel) ----
    #: the same update on every rank; its count is the gossip methods' topology-free part
    steps_scaling = replace(TOPOLOGY_FREE, baseline=True)

    def comm_pattern(self, d: int, n: int, degree: int = 2, *, master: str = "shared",
                     dtype: Any = np.float64, layout: Layout | None = None) -> list[Call]:
        return [Call("allreduce", d * np.dtype(dtype).itemsize, 1, n, what="dense gradient sum")]


class AllreduceCompressed(DecentralizedAlgorithm):
    """SGD on the average of compressed gradients (QSGD), payloads all-gathered."""

    name = "allreduce_qsgd"
    reference = "decomp.sim.gossip:simulate_allreduce_compressed"
    requirement = "unbiased"
    gossip = False

    def init(self, env: Env, x0: np.ndarray) -> AllreduceState:
        self.check(x0.size)
        return AllreduceState(0, x0.copy(), 0)

    def _step(self, env: Env, state: AllreduceState) -> AllreduceState:
        C, x, step = env.codec(self.compressor), state.x, state.t + 1
        g = self.grad(env, x, step)
        payload, bad = encode_or_zeros(C, g, env.key(step), step, state.bad)
        payloads = env.transport.allgather(payload, C.payload_bytes(x.size, x.dtype))
        acc = env.scratch("acc", x)
        acc[:] = 0
        for p in payloads:  # Σ_i C(∇F_i), in rank order like the reference
            C.decode_add(p, acc)
        x -= env.lr * (acc / env.n)
        if bad == 0 and not np.isfinite(x).all():
            bad = step
        return AllreduceState(step, x, bad)

    # ---- declarations (decomp.netmodel) ----
    steps_scaling = TOPOLOGY_FREE  # the same update on every rank

    def comm_pattern(self, d: int, n: int, degree: int = 2, *, master: str = "shared",
                     dtype: Any = np.float64, layout: Layout | None = None) -> list[Call]:
        return [Call("allgather", self.compressor.payload_bytes(d, dtype), 1, n,
                     what="compressed gradients")]

    def codec_ops(self, n: int, degree: int = 2, *, master: str = "shared") -> list[CodecOp]:
        return [CodecOp("encode", self.compressor, 1),
                CodecOp("decode", self.compressor, n, "every payload")]
