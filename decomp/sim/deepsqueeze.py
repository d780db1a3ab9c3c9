"""Vectorized reference of DeepSqueeze (Tang et al. 2019; :mod:`decomp.algorithms.deepsqueeze`),
written from its matrix equations; row i of every n × d array is node i::

    X½ = X − γ G(X);  V = X½ + E;  Q = C(V);  E ← V − Q;  X ← X½ + η (W_t − I) Q

from E^0 = 0, with C applied row by row with node i's key ``Key(seed, i, t)`` and η =
``alg.consensus_step``. (W_t − I) Q is summed row by row from zero as a node decodes the
payloads: row i adds (W_ii − 1) q_i first, then W_ij q_j for the neighbours j ascending, so
the MPI runtime agrees to the last bit. On a schedule W_t each step uses W_t's rows (no
replicas: nothing per edge). Bytes: one payload per out-neighbour of W_t per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decomp.compress import Compressor
from decomp.problems import Problem
from decomp.sim.decentralized import DecentralizedTrace, Rows, _compress, drive

__all__ = ["simulate_deepsqueeze"]


def simulate_deepsqueeze(alg: Any, problems: Sequence[Problem], x0: np.ndarray, W: Any, *,
                         lr: float, steps: int, seed: int, C: Compressor,
                         X0: np.ndarray | None) -> DecentralizedTrace:
    """DeepSqueeze for ``steps`` steps on n = len(problems) nodes from x0 (d,) (or X0 (n, d));
    state {"E"}: the compression errors e_i (n, d) at step T."""
    n, d = len(problems), x0.size
    E = np.zeros((n, d), dtype=x0.dtype)
    eta = alg.consensus_step

    def update(t: int, rows: Rows, X: np.ndarray, G: np.ndarray) -> np.ndarray:
        nonlocal E
        half = X - lr * G
        V = half + E
        Q = _compress(C, V, seed, t, alg.name)
        E = V - Q
        M = np.empty_like(X)
        for i, (w_ii, nbrs) in enumerate(rows):
            acc = np.zeros(d, dtype=X.dtype) + (w_ii - 1.0) * Q[i]
            for j, w in nbrs:
                acc = acc + w * Q[j]
            M[i] = acc
        return half + eta * M

    tr = drive(alg, problems, x0, W, steps=steps, seed=seed, X0=X0,
               msg_bytes=C.payload_bytes(d, x0.dtype), update=update)
    tr.state["E"] = E
    return tr
