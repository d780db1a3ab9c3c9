"""D-PSGD (Lian et al. 2017; the uncompressed member of Tang et al. 2018): dense gossip.

Node i, step t → t + 1 (X ∈ R^{n×d}, row i = x_i)::

    x_i^{t+1} = Σ_j W_ij x_j^t − γ ∇F_i(x_i^t; ξ_i^t)          (X^{t+1} = W X^t − γ G^t)

Wire: node i sends its dense x_i^t (d values in the model dtype, no header) to each neighbour:
deg_i · d · itemsize bytes per step.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from decomp.algorithms.decentralized_base import DecentralizedAlgorithm, NodeEnv, mix_rows


class DPSGDState(NamedTuple):
    t: int
    x: np.ndarray  # x_i^t, shape (d,)
    bad: int  # first step at which this node met a non-finite value (0: none)


class DPSGD(DecentralizedAlgorithm):
    """Decentralized parallel SGD with dense neighbour exchange of the models."""

    name = "dpsgd"
    uses_compressor = False

    def init(self, env: NodeEnv, x0: np.ndarray) -> DPSGDState:
        return DPSGDState(0, x0.copy(), 0)

    def _step(self, env: NodeEnv, state: DPSGDState) -> DPSGDState:
        tp, x = env.transport, state.x
        step = state.t + 1
        g = self.grad(env, x, step)
        got = tp.exchange(x.view(np.uint8), x.nbytes)
        # (1 + deg, d) scratch: row 0 = x_i, rows 1.. = the neighbours' x_j (ascending)
        R = env.scratch("recv", shape=(tp.indegree + 1, x.size), dtype=x.dtype)
        R[0] = x
        for k, j in enumerate(tp.sources):
            R[1 + k] = got[j].view(x.dtype)
        acc = mix_rows(tp.self_weight, [tp.weights[j] for j in tp.sources], R,
                       env.scratch("acc", x), env.scratch("tmp", x))
        acc -= env.lr * g  # Σ_j W_ij x_j^t − γ ∇F_i(x_i^t; ξ_i^t)
        x[:] = acc
        bad = state.bad or (0 if np.isfinite(x).all() else step)
        return DPSGDState(step, x, bad)
