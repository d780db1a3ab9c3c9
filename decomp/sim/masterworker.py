"""Vectorized master–worker reference: GD, DCGD, EF, EF21 (+SGD), EF21+; :func:`simulate`
also dispatches EF21-SGDM (:mod:`decomp.sim.ef21_sgdm`) and SGDM (:mod:`decomp.sim.sgdm`).

Rows of the n x d arrays are workers. Sums over workers are taken with ``A.sum(axis=0)``, which
adds rows in order, like the master decoding payloads in worker order (or summing the sparse
payloads into their union, which adds the same values in the same order: an entry a worker did
not send contributes +0), so float results agree bit for bit with the MPI runtime (the dense
all-reduce of GD may differ in the last ulp). Updates by the sum are written as the runtime
applies them on every rank: ``g + s / n``, ``x - s / n``, ``x - lr * (s / n)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decomp.compress import Compressor, Identity
from decomp.errors import ConfigError
from decomp.problems import Problem
from decomp.sim._common import Trace, _compress, _grads
from decomp.sim.ef21_sgdm import simulate_ef21_sgdm
from decomp.sim.ef21_variants import simulate_ef21_bc, simulate_ef21_pp
from decomp.sim.sgdm import simulate_sgdm

__all__ = ["OPTIONS", "Trace", "simulate"]


#: algorithm-specific options :func:`simulate` accepts (config name -> option names).
#: ``downlink`` ("compressed" | "model") only changes what crosses MPI, not the iterates: the
#: reference accepts and ignores it.
OPTIONS: dict[str, tuple[str, ...]] = {"ef21_sgdm": ("eta", "init_batch", "downlink"),
                                       "sgdm": ("momentum", "nesterov"),
                                       **{a: ("downlink",) for a in ("ef21", "ef21_sgd", "ef",
                                                                     "dcgd")}}
OPTIONS.update({"ef21_pp": ("p", "sampling", "transport", "downlink"),
                "ef21_bc": ("downlink_compressor",)})


def simulate(algorithm: str, problems: Sequence[Problem], x0: np.ndarray, *, lr: float,
             steps: int, seed: int = 0, compressor: Compressor | None = None,
             init: str | None = None, batch_size: int | None = None,
             **options: Any) -> Trace:
    """Run ``algorithm`` (a :data:`decomp.algorithms.MASTER_WORKER` name) for ``steps``
    iterations on n = len(problems) workers, from x0 (d,).

    init: EF21 family's g_i^0, "compressed" | "full" (None: "compressed", or "full" for
    ef21_sgdm, the defaults of the algorithm classes). options: ``eta``, ``init_batch``
    (ef21_sgdm, :func:`~decomp.sim.ef21_sgdm.simulate_ef21_sgdm`), ``momentum``, ``nesterov``
    (sgdm, :func:`~decomp.sim.sgdm.simulate_sgdm`); any other option is an error.
    """
    extra = sorted(set(options) - set(OPTIONS.get(algorithm, ())))
    if extra:
        raise ConfigError(f"decomp.sim: {algorithm!r} takes no option(s) {extra}")
    if algorithm in ("ef21_pp", "ef21_bc"):  # decomp/sim/ef21_variants.py
        run = simulate_ef21_pp if algorithm == "ef21_pp" else simulate_ef21_bc
        return run(problems, x0, lr=lr, steps=steps, seed=seed, compressor=compressor,
                   init=init or "compressed", batch_size=batch_size, **options)
    downlink = options.pop("downlink", "compressed")
    if downlink not in ("compressed", "model"):
        raise ConfigError(f"decomp.sim: downlink must be 'compressed' or 'model', got "
                          f"{downlink!r}")
    if algorithm == "ef21_sgdm":
        return simulate_ef21_sgdm(problems, x0, lr=lr, steps=steps, seed=seed,
                                  compressor=compressor, init=init or "full",
                                  batch_size=batch_size, **options)
    if algorithm == "sgdm":
        if compressor is not None or init is not None:
            raise ConfigError("decomp.sim: sgdm sends dense gradients (no compressor, no init)")
        return simulate_sgdm(problems, x0, lr=lr, steps=steps, seed=seed,
                             batch_size=batch_size, **options)
    init = init or "compressed"
    C = compressor if compressor is not None else Identity()
    n, d = len(problems), x0.size
    dt = x0.dtype
    x = x0.copy()
    xs = [x.copy()]
    sent = np.zeros(n, dtype=np.int64)
    per_msg = C.payload_bytes(d, dt)
    state: dict[str, np.ndarray] = {}

    if algorithm in ("gd", "sgd"):
        for t in range(1, steps + 1):
            x = x - lr * (_grads(problems, x, seed, t, batch_size).sum(axis=0) / n)
            xs.append(x)
            sent += d * dt.itemsize
    elif algorithm == "dcgd":
        for t in range(1, steps + 1):
            V = _compress(C, _grads(problems, x, seed, t, batch_size), seed, t)
            x = x - lr * (V.sum(axis=0) / n)
            xs.append(x)
            sent += per_msg
    elif algorithm == "ef":
        E = np.zeros((n, d), dtype=dt)
        for t in range(1, steps + 1):
            P = E + lr * _grads(problems, x, seed, t, batch_size)  # p_i = e_i + γ∇f_i(x^t)
            V = _compress(C, P, seed, t)  # v_i = C(p_i)
            E = P - V  # e_i = p_i − v_i
            x = x - V.sum(axis=0) / n
            xs.append(x)
            sent += per_msg
        state["E"] = E
    elif algorithm in ("ef21", "ef21_sgd", "ef21_plus"):
        grad0 = _grads(problems, x, seed, 0, None)  # full local gradients at x^0
        codec = C if init == "compressed" else Identity()
        G = _compress(codec, grad0, seed, 0)  # g_i^0
        g = G.sum(axis=0) / n
        sent += codec.payload_bytes(d, dt)
        for t in range(1, steps + 1):
            x = x - lr * g  # x^{t+1} = x^t − γ g^t
            xs.append(x)
            Gr = _grads(problems, x, seed, t, batch_size)
            Cm = _compress(C, Gr - G, seed, t)  # c_i = C(∇f_i(x^{t+1}) − g_i)
            if algorithm == "ef21_plus":
                M = G + Cm
                B = _compress(C, Gr, seed, t, stream=1)  # b_i = C(∇f_i(x^{t+1}))
                use_b = np.array([np.linalg.norm(B[i] - Gr[i]) < np.linalg.norm(M[i] - Gr[i])
                                  for i in range(n)])
                G = np.where(use_b[:, None], B, M)
                g = G.sum(axis=0) / n
                sent += per_msg + 1  # payload of either branch (same size) + flag byte
            else:
                G = G + Cm
                g = g + Cm.sum(axis=0) / n
                sent += per_msg
        state["G"], state["g"] = G, g
    else:
        raise ConfigError(f"decomp.sim has no master–worker algorithm {algorithm!r}")
    return Trace(np.stack(xs), sent, state)
