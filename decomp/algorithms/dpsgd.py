"""D-PSGD (Lian et al. 2017; the uncompressed member of Tang et al. 2018): dense gossip.

Node i, step t → t + 1 (X ∈ R^{n×d}, row i = x_i)::

    x_i^{t+1} = Σ_j W_ij x_j^t − γ ∇F_i(x_i^t; ξ_i^t)          (X^{t+1} = W X^t − γ G^t)

Wire: node i sends its dense x_i^t (d values in the model dtype, no header) to each neighbour:
deg_i · d · itemsize bytes per step.

Overlap: x_i^t is all the exchange needs, so it is posted before the gradient
∇F_i(x_i^t; ξ_i^t) is computed and waited for after it; the mixing then reads the received
rows in place (no staging copies) and writes x_i^{t+1} in one fused pass.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from decomp.algorithms.decentralized_base import DecentralizedAlgorithm, Env, mix
from decomp.theory import StepsScaling


class DPSGDState(NamedTuple):
    t: int
    x: np.ndarray  # x_i^t, shape (d,)
    bad: int  # first step at which this node met a non-finite value (0: none)


class DPSGD(DecentralizedAlgorithm):
    """Decentralized parallel SGD with dense neighbour exchange of the models."""

    name = "dpsgd"
    reference = "decomp.sim.gossip:simulate_dpsgd"
    uses_compressor = False
    # any doubly stochastic W, directed ones included: the average is kept (columns sum to 1)
    # and SGP (Assran et al. 2019) with such a W is this method; Ying et al. 2021 analyse it on
    # the directed one-peer exponential graph
    needs_symmetric_w = ""

    def init(self, env: Env, x0: np.ndarray) -> DPSGDState:
        return DPSGDState(0, x0.copy(), 0)

    def _step(self, env: Env, state: DPSGDState) -> DPSGDState:
        tp, x = env.transport, state.x
        step = state.t + 1
        tp.exchange_start(x.view(np.uint8), x.nbytes)  # x_i^t travels during the gradient
        g = self.grad(env, x, step)
        tp.exchange_finish()
        # x_i ← Σ_j W_ij x_j^t − γ ∇F_i(x_i^t; ξ_i^t), reading the neighbours' rows in place
        ok = mix(env, x, x, tp.received_rows(x.dtype, x.size), g)
        bad = state.bad or (0 if ok else step)
        return DPSGDState(step, x, bad)

    # ---- declarations (decomp.netmodel) ----
    steps_scaling = StepsScaling("p", True, "Koloskova et al. ICML 2020, Thm 2: transient ~ "
                                 "1/p, p = 1 - rho^2", False)
    exchanges = ("dense x_i",)
    overlaps_exchange = True  # x_i^t travels during the gradient
    dense_mixing = True
