"""GD / SGD with a dense all-reduce (no compression): the uncompressed baseline.

x^{t+1} = x^t − γ (1/n) Σ_i ∇f_i(x^t)   (or minibatch gradients ∇f_i(x^t; ξ_i^t))

:func:`allreduce_descend` is this step for both families: ``sgd`` here and the decentralized
family's ``allreduce_sgd`` (:class:`~decomp.algorithms.allreduce.AllreduceSGD`) run the same
code — the gradient summed in place, then one fused pass, no per-step temporary.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from decomp.algorithms.base import Env, MasterWorkerAlgorithm, diverged
from decomp.kernels.fused import descend_mean


def allreduce_descend(transport: Any, x: np.ndarray, g: np.ndarray, lr: float, n: int) -> bool:
    """x ← x − γ (Σ_i g_i) / n: g (d,) is summed over the ranks in place by a dense
    all-reduce (``transport.allreduce_sum``), then x (d,) is updated in one fused pass
    (numpy: ``x - lr * (g / n)``). True iff x is finite."""
    transport.allreduce_sum(g)
    t = x.dtype.type
    return bool(descend_mean(x, t(lr), g, t(n)))


class GDState(NamedTuple):
    t: int
    x: np.ndarray  # x^t, shape (d,), on every rank


class GD(MasterWorkerAlgorithm):
    """Gradient descent with MPI Allreduce of dense gradients (``batch_size`` -> SGD)."""

    name = "gd"
    reference = "decomp.sim.masterworker:simulate_gd"
    uses_compressor = False
    downlink = "allreduce"

    def init(self, env: Env, x0: np.ndarray) -> GDState:
        return GDState(0, x0.copy())

    def _step(self, env: Env, state: GDState) -> GDState:
        x = state.x
        if env.transport.is_worker:
            g = self.grad(env, x, state.t + 1)  # may be a problem's buffer: summed in place
        else:  # a dedicated master joins the all-reduce with zeros
            g = env.scratch("zeros", x)
            g.fill(0)
        if not allreduce_descend(env.transport, x, g, env.lr, env.n):
            raise diverged(state.t + 1, self.name)
        return GDState(state.t + 1, x)

    # ---- declarations (decomp.torch.oracle) ----
    torch_driver = "update"  # a step is the gradient at x^t, then x^{t+1}
