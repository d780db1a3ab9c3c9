"""Vectorized reference of all-reduce SGD with momentum (see :mod:`decomp.algorithms.sgdm`).

The dense all-reduce of the runtime may add the workers' gradients in another order than
``sum(axis=0)`` here, so results agree to rounding (not necessarily bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from decomp.errors import ConfigError
from decomp.problems import Problem
from decomp.sim._common import Trace, _grads


def simulate_sgdm(problems: Sequence[Problem], x0: np.ndarray, *, lr: float, steps: int,
                  seed: int = 0, momentum: float = 0.9, nesterov: bool = False,
                  batch_size: int | None = None) -> Trace:
    """SGD with heavy-ball (or Nesterov) momentum β on n = len(problems) workers.

    Returns xs (T+1, d), bytes_up (n,) (d dense values per step and worker) and state {"m"}.
    """
    if not 0.0 <= momentum < 1.0:
        raise ConfigError(f"sgdm: momentum must be in [0, 1), got {momentum}")
    n, d, dt = len(problems), x0.size, x0.dtype
    x = x0.copy()
    m = np.zeros_like(x0)
    xs = [x.copy()]
    sent = np.zeros(n, dtype=np.int64)
    for t in range(1, steps + 1):
        gbar = _grads(problems, x, seed, t, batch_size).sum(axis=0) / n  # ḡ^t
        m = momentum * m + gbar  # m^{t+1} = β m^t + ḡ^t
        x = x - lr * (gbar + momentum * m if nesterov else m)
        xs.append(x)
        sent += d * dt.itemsize
    return Trace(np.stack(xs), sent, {"m": m})
