"""GD / SGD with a dense all-reduce (no compression): the uncompressed baseline.

x^{t+1} = x^t − γ (1/n) Σ_i ∇f_i(x^t)   (or minibatch gradients ∇f_i(x^t; ξ_i^t))
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from decomp.algorithms.base import Env, MasterWorkerAlgorithm, diverged
from decomp.kernels.fused import descend_mean


class GDState(NamedTuple):
    t: int
    x: np.ndarray  # x^t, shape (d,), on every rank


class GD(MasterWorkerAlgorithm):
    """Gradient descent with MPI Allreduce of dense gradients (``batch_size`` -> SGD)."""

    name = "gd"
    uses_compressor = False

    def init(self, env: Env, x0: np.ndarray) -> GDState:
        return GDState(0, x0.copy())

    def _step(self, env: Env, state: GDState) -> GDState:
        x = state.x
        if env.transport.is_worker:
            g = self.grad(env, x, state.t + 1)  # may be a problem's buffer: summed in place
        else:  # a dedicated master joins the all-reduce with zeros
            g = env.scratch("zeros", x)
            g.fill(0)
        env.transport.allreduce_sum(g)
        t = x.dtype.type
        if not descend_mean(x, t(env.lr), g, t(env.n)):  # x − γ (g / n), one pass
            raise diverged(state.t + 1, self.name)
        return GDState(state.t + 1, x)

    # ---- declarations (decomp.torch.oracle) ----
    torch_driver = "update"  # a step is the gradient at x^t, then x^{t+1}
