"""Vectorized references of EF21-PP and EF21-BC (Fatkhullin et al. 2021, *EF21 with Bells &
Whistles*, Algorithms 4 and 5), written from the paper's equations on n x d arrays (row i =
worker i); see :mod:`decomp.algorithms.ef21_pp` and :mod:`decomp.algorithms.ef21_bc`.

Sums over workers add rows in worker order (``A.sum(axis=0)``), like the master decoding the
payloads in worker order, and every update is written as the runtime applies it
(``g + s / n``, ``x - lr * g``), so the MPI runs agree with these bit for bit.

Besides ``bytes_up`` (n,) the traces carry the per-step traffic in ``state`` — it varies from
step to step here (PP: who takes part and the size of the downlink sum; BC: the C_M payload) —
``up_bytes`` (T+1,): mean payload bytes per worker sent at step t, and ``down_bytes`` (T+1,):
bytes of the master's broadcast payload at step t (0 where it broadcasts the dense model:
``downlink = "model"`` counts d values per step instead, see ``decomp sim``'s accounting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decomp.algorithms.env import Stream, stream_key
from decomp.compress import Compressor, Identity
from decomp.compress.aggregate import SumEncoder
from decomp.participation import participants
from decomp.problems import Problem, oracle_grad
from decomp.rng import Key
from decomp.sim._common import Trace, WorkerSum, _compress, _grads

__all__ = ["simulate_ef21_bc", "simulate_ef21_pp"]


def _init_round(C: Compressor, init: str, problems: Sequence[Problem], x0: np.ndarray,
                seed: int) -> tuple[Compressor, np.ndarray, list[np.ndarray]]:
    """Step 0 of both methods: (codec, G0 (n, d) with rows g_i^0, the wire payloads)."""
    codec = C if init == "compressed" else Identity()
    grad0 = _grads(problems, x0, seed, 0, None)  # full local gradients at x^0
    payloads = [codec.encode(grad0[i], Key(seed, i, 0)) for i in range(len(problems))]
    return codec, _compress(codec, grad0, seed, 0), payloads


def simulate_ef21_pp(alg: Any, problems: Sequence[Problem], x0: np.ndarray, *, lr: float,
                     steps: int, seed: int, C: Compressor, aggregation: str = "gather") -> Trace:
    """EF21-PP for ``steps`` steps on n = len(problems) workers from x0 (d,); p, sampling,
    init, downlink and τ from ``alg`` (its ``transport`` only changes how the bytes move).
    state: G (n, d) the g_i, g, up_bytes, down_bytes (see the module doc), S (T+1, n) the
    participation masks (row 0: everyone, the initial round)."""
    init, batch_size, p, sampling = alg.init_mode, alg.batch_size, alg.p, alg.sampling
    downlink = alg.downlink
    n, d, dt = len(problems), x0.size, x0.dtype
    per_msg = C.payload_bytes(d, dt)
    enc = SumEncoder(d, dt)
    codec, G, pay0 = _init_round(C, init, problems, x0, seed)
    tree = WorkerSum(aggregation, d, dt) if aggregation == "tree" else None
    x = x0.copy()
    xs = [x.copy()]
    up = np.zeros(steps + 1)
    down = np.zeros(steps + 1)
    masks = np.ones((steps + 1, n), dtype=bool)
    if tree is None:
        g = G.sum(axis=0) / n
        sent = np.full(n, codec.payload_bytes(d, dt), dtype=np.int64)
        up[0] = codec.payload_bytes(d, dt)
        down[0] = enc.encode(codec, pay0).size if downlink == "compressed" else 0
    else:  # the tree (aggregation = "tree"): its grouping, each rank's subtree message
        sent = np.zeros(n, dtype=np.int64)
        g = tree(G, codec, sent) / n
        up[0], down[0] = tree.up[-1], tree.down[-1]
    for t in range(1, steps + 1):
        x = x - lr * g  # x^{t+1} = x^t − γ g^t
        xs.append(x)
        S = participants(seed, t, n, p, sampling, out=masks[t])
        idx = np.flatnonzero(S)
        pays = []
        if idx.size:
            D = np.stack([oracle_grad(problems[i], x, seed=seed, worker=int(i), step=t,
                                      batch_size=batch_size) - G[i] for i in idx])
            Cm = np.stack([C.reference(D[j], Key(seed, int(i), t)) for j, i in enumerate(idx)])
            pays = [C.encode(D[j], Key(seed, int(i), t)) for j, i in enumerate(idx)]
            G[idx] = G[idx] + Cm  # g_i^{t+1} = g_i^t + c_i^t for i ∈ S_t only
            if tree is None:
                g = g + Cm.sum(axis=0) / n  # the mean over all n: c_i = 0 outside S_t
                sent[idx] += per_msg
        if tree is not None:  # every rank takes part in the tree; c_i = 0 outside S_t
            full = np.zeros((n, d), dtype=dt)
            if idx.size:
                full[idx] = Cm
            g = g + tree(full, C, sent) / n
            up[t], down[t] = tree.up[-1], tree.down[-1]
            continue
        up[t] = idx.size * per_msg / n
        down[t] = enc.encode(C, pays).size if downlink == "compressed" else 0
    return Trace(np.stack(xs), sent, {"G": G, "g": g, "up_bytes": up, "down_bytes": down,
                                      "S": masks})


def simulate_ef21_bc(alg: Any, problems: Sequence[Problem], x0: np.ndarray, *, lr: float,
                     steps: int, seed: int, C: Compressor) -> Trace:
    """EF21-BC for ``steps`` steps on n = len(problems) workers from x0 (d,); C_w = C, C_M =
    ``alg.downlink_compressor`` (C itself when that is the uplink's compressor). state:
    G (n, d) the g̃_i, g_tilde, g, up_bytes, down_bytes (see the module doc)."""
    init, batch_size = alg.init_mode, alg.batch_size
    CM = C if alg.downlink_compressor is alg.compressor else alg.downlink_compressor
    n, d, dt = len(problems), x0.size, x0.dtype
    codec, G, _ = _init_round(C, init, problems, x0, seed)
    g_tilde = G.sum(axis=0) / n  # g̃^0
    CM0 = CM if init == "compressed" else Identity()
    g = np.zeros_like(x0) + CM0.reference(g_tilde - np.zeros_like(x0),
                                          stream_key(seed, None, n, 0, Stream.MASTER))
    x = x0.copy()
    xs = [x.copy()]
    up = np.full(steps + 1, float(C.payload_bytes(d, dt)))
    down = np.full(steps + 1, float(CM.payload_bytes(d, dt)))
    up[0] = codec.payload_bytes(d, dt)
    down[0] = CM0.payload_bytes(d, dt)
    for t in range(1, steps + 1):
        x = x - lr * g  # x^{t+1} = x^t − γ g^t, on every rank
        xs.append(x)
        Cm = _compress(C, _grads(problems, x, seed, t, batch_size) - G, seed, t)  # c_i^t
        G = G + Cm  # g̃_i^{t+1}
        g_tilde = g_tilde + Cm.sum(axis=0) / n  # g̃^{t+1}
        # g^{t+1} = g^t + b^{t+1}, b^{t+1} = C_M(g̃^{t+1} − g^t) drawn from rank slot 2n
        g = g + CM.reference(g_tilde - g, stream_key(seed, None, n, t, Stream.MASTER))
    sent = np.full(n, int(up.sum()), dtype=np.int64)
    return Trace(np.stack(xs), sent, {"G": G, "g_tilde": g_tilde, "g": g, "up_bytes": up,
                                      "down_bytes": down})

