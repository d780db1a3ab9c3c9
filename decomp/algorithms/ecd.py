"""ECD-PSGD (Tang, Gan, Zhang, Zhang, Liu, NeurIPS 2018, Algorithm 2): extrapolation compression.

Node i keeps estimates ỹ_j of its neighbours and of itself, all starting at x^0. The paper's
iteration counter t starts at 1 (``t_start``); step k = 1, 2, … of the run uses
t = t_start + k − 1::

    x_i^{t+1} = Σ_j W_ij ỹ_j^t − γ ∇F_i(x_i^t; ξ_i^t)          (ỹ_i: node i's own estimate)
    z_i^t     = (1 − t/2) x_i^t + (t/2) x_i^{t+1}
    send C(z_i^t);  every holder of ỹ_i (i itself included):
                ỹ_i^{t+1} = (1 − 2/t) ỹ_i^t + (2/t) C(z_i^t)

E[ỹ_i^{t+1}] − x_i^{t+1} = (1 − 2/t)(ỹ_i^t − x_i^t): the estimate tracks the model without
error feedback. t = 0 is undefined (2/t), so ``t_start`` must be >= 1. C must be unbiased.

Wire: one compressed payload C(z_i) per neighbour per step (``C.payload_bytes(d, dtype)``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from decomp.algorithms.decentralized_base import DecentralizedAlgorithm, Env, mix
from decomp.algorithms.replica import replica_round
from decomp.compress import Compressor
from decomp.errors import ConfigError
from decomp.kernels.fused import all_finite
from decomp.theory import StepsScaling


class ECDState(NamedTuple):
    t: int  # steps done (the paper's counter of the next step is t_start + t)
    x: np.ndarray  # x_i (d,)
    R: np.ndarray  # (1 + deg, d): R[0] = ỹ_i (own estimate), R[1 + k] = ỹ of the k-th neighbour
    bad: int  # first step at which this node met a non-finite value (0: none)


def check_t_start(t_start: Any) -> int:
    """The paper counts t from 1 and divides by t: refuse anything below 1."""
    if isinstance(t_start, bool) or not isinstance(t_start, int) or t_start < 1:
        raise ConfigError(
            f"ecd_psgd: t_start must be an integer >= 1, got {t_start!r}: ECD-PSGD counts t "
            "from 1 (Tang et al. 2018, Algorithm 2) and its estimate update "
            "ỹ ← (1 − 2/t) ỹ + (2/t) C(z) is undefined at t = 0")
    return t_start


class ECDPSGD(DecentralizedAlgorithm):
    """ECD-PSGD with an unbiased compressor C; ``t_start`` = the paper's t at the first step."""

    name = "ecd_psgd"
    reference = "decomp.sim.gossip:simulate_ecd_psgd"
    requirement = "unbiased"
    needs_symmetric_w = ("its analysis (Tang et al. 2018, Assumption 1) takes W symmetric and "
                         "bounds the extrapolation noise by W's real eigenvalues")
    refuses_schedule = ("every holder of an estimate ỹ_j rescales it by (1 − 2/t) and adds "
                        "(2/t) C(z_j) at every step; a node that is not j's neighbour at some "
                        "step misses that step's payload, and one payload cannot carry the "
                        "missed ones (the per-edge replicas of DCD/CHOCO need a difference to "
                        "compress, ECD sends a point)")

    def __init__(self, compressor: Compressor | None = None, *, t_start: int = 1,
                 batch_size: int | None = None, lr: float | None = None) -> None:
        super().__init__(compressor, batch_size=batch_size, lr=lr)
        self.t_start = check_t_start(t_start)

    def init(self, env: Env, x0: np.ndarray) -> ECDState:
        self.check(x0.size)
        R = np.tile(x0, (env.transport.indegree + 1, 1))
        return ECDState(0, x0.copy(), R, 0)

    def _step(self, env: Env, state: ECDState) -> ECDState:
        x, R = state.x, state.R
        acc, tmp, z = env.scratch("acc", x), env.scratch("tmp", x), env.scratch("z", x)
        step = state.t + 1
        t = self.t_start + state.t  # the paper's t
        g = self.grad(env, x, step)
        new = acc
        mix(env, new, R[0], R[1:], g)  # x_i^{t+1} = Σ_j W_ij ỹ_j − γ g, one pass
        np.multiply(x, 1.0 - t / 2, out=z)
        z += np.multiply(new, t / 2, out=tmp)  # z_i^t = (1 − t/2) x_i^t + (t/2) x_i^{t+1}
        x[:] = new
        # ỹ ← (1 − 2/t) ỹ + (2/t) C(z) for the own estimate (as the neighbours do) and theirs
        bad = replica_round(env, self.compressor, z, R, step, state.bad,
                            keep=1.0 - 2.0 / t, scale=2.0 / t)
        if bad == 0 and not all_finite(x):
            bad = step
        return ECDState(step, x, R, bad)

    # ---- declarations (decomp.netmodel) ----
    steps_scaling = StepsScaling("p", True, "as D-PSGD (Koloskova et al. 2020), heuristic for "
                                 "ECD", True)
    dense_mixing = True
