"""Vectorized master–worker references: GD/SGD, DCGD, EF, EF21 (+SGD) and EF21+, each built
from its algorithm object (:func:`decomp.sim.reference` resolves a class's ``reference``).

Rows of the n x d arrays are workers. Sums over workers are taken with ``A.sum(axis=0)``, which
adds rows in order, like the master decoding payloads in worker order (or summing the sparse
payloads into their union, which adds the same values in the same order: an entry a worker did
not send contributes +0), so float results agree bit for bit with the MPI runtime (the dense
all-reduce of GD may differ in the last ulp). Updates by the sum are written as the runtime
applies them on every rank: ``g + s / n``, ``x - s / n``, ``x - lr * (s / n)``.

Every function here takes ``(alg, problems, x0, *, lr, steps, seed, C)``: the algorithm object
(its ``batch_size`` τ and options are read from it), the n workers' f_i, x^0 (d,), the step size
γ, the number of steps T, the run seed and the compressor C to apply (the algorithm's, or a
wrapper of it such as ``decomp sim``'s recorder). ``downlink`` only changes what crosses MPI,
not the iterates: the references ignore it. ``aggregation`` (the run's, as
:meth:`~decomp.algorithms.base.MasterWorkerAlgorithm.aggregation_for` resolves it for the
method) sets the order of the sums over workers and the bytes each rank sends for them
(:class:`~decomp.sim._common.WorkerSum`): "gather" in worker order, "tree" by the schedule of
:mod:`decomp.comm.tree` ("auto" resolved by :mod:`decomp.comm.nodes`' layout).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decomp.algorithms.env import Stream
from decomp.compress import Compressor, Identity
from decomp.compress._wire import VDTYPE_CODE, round_like_wire
from decomp.problems import Problem
from decomp.sim._common import Trace, WorkerSum, _compress, _grads

__all__ = ["simulate_dcgd", "simulate_ef", "simulate_ef21", "simulate_ef21_plus", "simulate_gd"]


def simulate_gd(alg: Any, problems: Sequence[Problem], x0: np.ndarray, *, lr: float, steps: int,
                seed: int, C: Compressor) -> Trace:
    """x^{t+1} = x^t − γ (1/n) Σ_i ∇f_i(x^t) (minibatch gradients with τ): d dense values per
    worker and step."""
    del C
    n, d, dt = len(problems), x0.size, x0.dtype
    x, xs, sent = x0.copy(), [x0.copy()], np.zeros(n, dtype=np.int64)
    wire = getattr(alg, "wire_dtype", None)
    for t in range(1, steps + 1):
        G = _grads(problems, x, seed, t, alg.batch_size)
        if wire is None:
            x = x - lr * (G.sum(axis=0) / n)
        else:  # 16-bit wire: r16((Σ_i r16(g_i)) / n), float32 sums in worker order
            code = VDTYPE_CODE[wire]
            with np.errstate(over="ignore", invalid="ignore"):
                acc = np.zeros(d, dtype=np.float32)
                for i in range(n):
                    acc = acc + _r16(G[i], code)
                x = x - lr * _r16(acc / np.float32(n), code).astype(dt)
        xs.append(x)
        sent += d * (2 if wire else dt.itemsize)
    return Trace(np.stack(xs), sent, {})


def _r16(v: np.ndarray, code: int) -> np.ndarray:
    """v rounded to the 16-bit format ``code``, as float32 (NaN everywhere if a value does
    not fit)."""
    try:
        return round_like_wire(v, code).astype(np.float32)
    except FloatingPointError:
        return np.full(v.size, np.nan, dtype=np.float32)


def simulate_dcgd(alg: Any, problems: Sequence[Problem], x0: np.ndarray, *, lr: float, steps: int,
                  seed: int, C: Compressor, aggregation: str = "gather") -> Trace:
    """x^{t+1} = x^t − γ (1/n) Σ_i C(∇f_i(x^t))."""
    n, d, dt = len(problems), x0.size, x0.dtype
    x, xs, sent = x0.copy(), [x0.copy()], np.zeros(n, dtype=np.int64)
    total = WorkerSum(aggregation, d, dt)
    for t in range(1, steps + 1):
        V = _compress(C, _grads(problems, x, seed, t, alg.batch_size), seed, t)
        x = x - lr * (total(V, C, sent) / n)
        xs.append(x)
    return Trace(np.stack(xs), sent, total.traffic(steps))


def simulate_ef(alg: Any, problems: Sequence[Problem], x0: np.ndarray, *, lr: float, steps: int,
                seed: int, C: Compressor, aggregation: str = "gather") -> Trace:
    """p_i = e_i + γ∇f_i(x^t); v_i = C(p_i); e_i = p_i − v_i; x^{t+1} = x^t − (1/n) Σ_i v_i.
    state: E (n, d) the e_i."""
    n, d, dt = len(problems), x0.size, x0.dtype
    x, xs, sent = x0.copy(), [x0.copy()], np.zeros(n, dtype=np.int64)
    E = np.zeros((n, d), dtype=dt)
    total = WorkerSum(aggregation, d, dt)
    for t in range(1, steps + 1):
        P = E + lr * _grads(problems, x, seed, t, alg.batch_size)  # p_i = e_i + γ∇f_i(x^t)
        V = _compress(C, P, seed, t)  # v_i = C(p_i)
        E = P - V  # e_i = p_i − v_i
        x = x - total(V, C, sent) / n
        xs.append(x)
    return Trace(np.stack(xs), sent, {"E": E, **total.traffic(steps)})


def _ef21_init(alg: Any, problems: Sequence[Problem], x0: np.ndarray, seed: int,
               C: Compressor, total: WorkerSum | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    """(G (n, d) the g_i^0, g^0, bytes each worker sent (n,)): g_i^0 = C(∇f_i(x^0)) or
    ∇f_i(x^0) (``init = "full"``), summed by ``total`` (None: in worker order)."""
    codec = C if alg.init_mode == "compressed" else Identity()
    G = _compress(codec, _grads(problems, x0, seed, 0, None), seed, 0)  # full local gradients
    sent = np.zeros(len(problems), dtype=np.int64)
    total = WorkerSum("gather", x0.size, x0.dtype) if total is None else total
    return G, total(G, codec, sent) / len(problems), sent


def simulate_ef21(alg: Any, problems: Sequence[Problem], x0: np.ndarray, *, lr: float, steps: int,
                  seed: int, C: Compressor, aggregation: str = "gather") -> Trace:
    """EF21 (Algorithm 1): x^{t+1} = x^t − γ g^t; c_i = C(∇f_i(x^{t+1}) − g_i);
    g_i += c_i; g += (1/n) Σ_i c_i. state: G (n, d), g."""
    n, d, dt = len(problems), x0.size, x0.dtype
    total = WorkerSum(aggregation, d, dt)
    G, g, sent = _ef21_init(alg, problems, x0, seed, C, total)
    x, xs = x0.copy(), [x0.copy()]
    for t in range(1, steps + 1):
        x = x - lr * g  # x^{t+1} = x^t − γ g^t
        xs.append(x)
        Cm = _compress(C, _grads(problems, x, seed, t, alg.batch_size) - G, seed, t)
        G = G + Cm
        g = g + total(Cm, C, sent) / n
    return Trace(np.stack(xs), sent, {"G": G, "g": g, **total.traffic(steps)})


def simulate_ef21_plus(alg: Any, problems: Sequence[Problem], x0: np.ndarray, *, lr: float,
                       steps: int, seed: int, C: Compressor) -> Trace:
    """EF21+: g_i ← the closer to ∇f_i(x^{t+1}) of g_i + C(∇f_i − g_i) (EF21) and C(∇f_i)
    (DCGD, stream 1); g = (1/n) Σ_i g_i. A payload and a flag byte per worker and step."""
    n, d, dt = len(problems), x0.size, x0.dtype
    G, g, sent = _ef21_init(alg, problems, x0, seed, C)
    x, xs = x0.copy(), [x0.copy()]
    for t in range(1, steps + 1):
        x = x - lr * g
        xs.append(x)
        Gr = _grads(problems, x, seed, t, alg.batch_size)
        M = G + _compress(C, Gr - G, seed, t)
        B = _compress(C, Gr, seed, t, stream=Stream.SECOND)  # b_i = C(∇f_i(x^{t+1}))
        use_b = np.array([np.linalg.norm(B[i] - Gr[i]) < np.linalg.norm(M[i] - Gr[i])
                          for i in range(n)])
        G = np.where(use_b[:, None], B, M)
        g = G.sum(axis=0) / n
        sent += C.payload_bytes(d, dt) + 1  # payload of either branch (same size) + flag byte
    return Trace(np.stack(xs), sent, {"G": G, "g": g})
