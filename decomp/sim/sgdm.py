"""Vectorized reference of all-reduce SGD with momentum (see :mod:`decomp.algorithms.sgdm`).

The dense all-reduce of the runtime may add the workers' gradients in another order than
``sum(axis=0)`` here, so results agree to rounding (not necessarily bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decomp.compress import Compressor
from decomp.problems import Problem
from decomp.sim._common import Trace, _grads


def simulate_sgdm(alg: Any, problems: Sequence[Problem], x0: np.ndarray, *, lr: float, steps: int,
                  seed: int, C: Compressor) -> Trace:
    """SGD with heavy-ball (or Nesterov) momentum β = ``alg.momentum`` on n = len(problems)
    workers (``alg.nesterov``, ``alg.batch_size`` τ; C unused: dense gradients).

    Returns xs (T+1, d), bytes_up (n,) (d dense values per step and worker) and state {"m"}.
    """
    del C
    momentum, nesterov, batch_size = alg.momentum, alg.nesterov, alg.batch_size
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
