"""All-reduce SGD with (heavy-ball) momentum: the dense baseline for torch training.

The average of the workers' (minibatch) gradients is formed with a dense MPI Allreduce, then
the momentum step is taken identically on every rank (torch.optim.SGD's convention, without
dampening)::

    ḡ^t     = (1/n) Σ_i ∇f_i(x^t; ξ_i^t)
    m^{t+1} = β m^t + ḡ^t                    (m^0 = 0)
    x^{t+1} = x^t − γ m^{t+1}                 (heavy ball)
    x^{t+1} = x^t − γ (ḡ^t + β m^{t+1})       (nesterov = True)

β = 0 is :class:`decomp.algorithms.GD` (SGD with ``batch_size``). Since the momentum is
linear, keeping m on every rank after the all-reduce equals averaging per-worker momenta.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from decomp.algorithms.base import Env, MasterWorkerAlgorithm, diverged
from decomp.errors import ConfigError
from decomp.kernels.fused import momentum


class SGDMState(NamedTuple):
    t: int
    x: np.ndarray  # x^t (d,), every rank
    m: np.ndarray  # momentum buffer m^t (d,), every rank


class SGDM(MasterWorkerAlgorithm):
    """Dense all-reduce SGD with momentum β (``momentum``) and optional Nesterov.

    Args:
        momentum: β ∈ [0, 1).
        nesterov: use the Nesterov form.
        batch_size: τ (None = full local gradients, i.e. GD with momentum).
        lr: optional default step size γ (a Trainer or Env lr given explicitly wins).
    """

    name = "sgdm"
    reference = "decomp.sim.sgdm:simulate_sgdm"
    uses_compressor = False
    downlink = "allreduce"

    def __init__(self, *, momentum: float = 0.9, nesterov: bool = False,
                 batch_size: int | None = None, lr: float | None = None) -> None:
        super().__init__(None, batch_size=batch_size, lr=lr)
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"{self.name}: momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def init(self, env: Env, x0: np.ndarray) -> SGDMState:
        return SGDMState(0, x0.copy(), np.zeros_like(x0))

    def _step(self, env: Env, state: SGDMState) -> SGDMState:
        x, m = state.x, state.m
        if env.transport.is_worker:
            g = self.grad(env, x, state.t + 1)  # may be a problem's buffer: used in place
        else:  # a dedicated master joins the all-reduce with zeros
            g = env.scratch("zeros", x)
            g.fill(0)
        env.transport.allreduce_sum(g)
        t = x.dtype.type  # ḡ = g / n;  m ← β m + ḡ;  x ← x − γ m (or − γ (ḡ + β m)): one pass
        if not momentum(x, m, g, t(env.n), t(self.momentum), t(env.lr), self.nesterov):
            raise diverged(state.t + 1, self.name)
        return SGDMState(state.t + 1, x, m)

    # ---- declarations (decomp.torch.oracle) ----
    torch_driver = "update"  # a step is the gradient at x^t, then x^{t+1}
