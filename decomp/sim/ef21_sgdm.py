"""Vectorized reference of EF21-SGDM (extension; see :mod:`decomp.algorithms.ef21_sgdm`).

Rows of the n x d arrays are workers; sums over workers add rows in order like the master
decoding payloads in worker order, so float results agree bit for bit with the MPI runtime.
Same randomness as the runtime: minibatches from (seed, worker, step), compressor keys
(seed, worker, step); the initial v_i^0 uses step 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decomp.compress import Compressor, Identity
from decomp.problems import Problem
from decomp.sim._common import Trace, WorkerSum, _compress, _grads


def simulate_ef21_sgdm(alg: Any, problems: Sequence[Problem], x0: np.ndarray, *, lr: float,
                       steps: int, seed: int, C: Compressor,
                       aggregation: str = "gather") -> Trace:
    """EF21-SGDM for ``steps`` iterations on n = len(problems) workers; η = ``alg.eta``,
    g_i^0 from ``alg.init_mode``, v_i^0 with ``alg.init_batch``, τ = ``alg.batch_size``.

    Returns a :class:`~decomp.sim.Trace` with xs (T+1, d), bytes_up (n,) and state
    {"V": all v_i, "G": all g_i, "g": g}.
    """
    eta, init, init_batch, batch_size = alg.eta, alg.init_mode, alg.init_batch, alg.batch_size
    n, d, dt = len(problems), x0.size, x0.dtype
    x = x0.copy()
    xs = [x.copy()]
    sent = np.zeros(n, dtype=np.int64)
    total = WorkerSum(aggregation, d, dt)
    V = _grads(problems, x, seed, 0, init_batch).astype(dt, copy=False)  # v_i^0
    codec = C if init == "compressed" else Identity()
    G = _compress(codec, V, seed, 0)  # g_i^0
    g = total(G, codec, sent) / n
    for t in range(1, steps + 1):
        x = x - lr * g  # x^{t+1} = x^t − γ g^t
        xs.append(x)
        V = V * (1.0 - eta) + eta * _grads(problems, x, seed, t, batch_size)  # momentum
        Cm = _compress(C, V - G, seed, t)  # c_i = C(v_i^{t+1} − g_i^t)
        G = G + Cm
        g = g + total(Cm, C, sent) / n
    return Trace(np.stack(xs), sent, {"V": V, "G": G, "g": g, **total.traffic(steps)})
