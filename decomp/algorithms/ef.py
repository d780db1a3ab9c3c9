"""Classic error feedback (Seide et al. 2014; Stich et al. 2018), as in the EF21 authors' code,
and compressed GD without error feedback (DCGD) for unbiased compressors.

EF, worker i (e_i^0 = 0)::

    v_i = C(e_i + γ ∇f_i(x^t));   e_i ← e_i + γ ∇f_i(x^t) − v_i;   send v_i
    master: x^{t+1} = x^t − (1/n) Σ_i v_i;  broadcast x^{t+1}

DCGD: x^{t+1} = x^t − γ (1/n) Σ_i C(∇f_i(x^t)).

Downlink (``downlink``): "compressed" (default) — the master re-encodes Σ_i v_i (sparse union
or dense, :mod:`decomp.compress.aggregate`), broadcasts it, and every rank applies the update
to its x; "model" — the master updates x and broadcasts it dense. Same iterates either way.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from decomp.algorithms.base import (
    Env,
    MasterWorkerAlgorithm,
    Own,
    check_downlink,
    check_finite,
    collect,
    decode_add_or_poison,
    diverged,
    encode_or_poison,
    update_from_sum,
)
from decomp.compress import Compressor
from decomp.kernels.fused import axpy


def _update_x(alg: EF | DCGD, env: Env, payloads: list[np.ndarray] | Own | None, x: np.ndarray,
              c: float, step: int) -> None:
    """x ← x + c · (1/n) Σ_i v_i on every rank (compressed downlink) or on the master, then
    broadcast (model); raises on every rank alike if x became non-finite."""
    if alg.downlink == "compressed":
        if not update_from_sum(env, alg.compressor, "compressed", payloads, x, c, x):
            raise diverged(step, alg.name)
        return
    update_from_sum(env, alg.compressor, "model", payloads, x, c, x)
    env.transport.broadcast(x)
    check_finite(x, step, alg.name)


class EFState(NamedTuple):
    t: int
    x: np.ndarray  # x^t (d,), every rank
    e: np.ndarray | None  # e_i (d,), this worker's error; None on a dedicated master


class EF(MasterWorkerAlgorithm):
    """Classic error feedback with a contractive compressor C (e.g. Top-k)."""

    name = "ef"
    reference = "decomp.sim.masterworker:simulate_ef"

    def __init__(self, compressor: Compressor | None = None, *, downlink: str = "compressed",
                 batch_size: int | None = None, lr: float | None = None) -> None:
        super().__init__(compressor, batch_size=batch_size, lr=lr)
        self.downlink = check_downlink(self.name, downlink)

    def init(self, env: Env, x0: np.ndarray) -> EFState:
        self.check(x0.size)
        e = np.zeros_like(x0) if env.transport.is_worker else None
        return EFState(0, x0.copy(), e)

    def _step(self, env: Env, state: EFState) -> EFState:
        x, e, tp = state.x, state.e, env.transport
        C, payload, step = env.codec(self.compressor), None, state.t + 1
        nbytes = C.payload_bytes(x.size, x.dtype)
        if tp.is_worker:
            assert e is not None
            axpy(e, x.dtype.type(env.lr), self.grad(env, x, step))  # p_i = e_i + γ ∇f_i(x^t)
            payload = encode_or_poison(C, e, env.key(step), nbytes)
        payloads = collect(self, env, payload, nbytes)
        if payload is not None:
            assert e is not None
            decode_add_or_poison(C, payload, e, -1.0)  # e_i = p_i − v_i (master aggregates)
        _update_x(self, env, payloads, x, -1.0, step)  # x − (1/n) Σ_i v_i
        return EFState(step, x, e)

    # ---- declarations (decomp.torch.oracle) ----
    torch_driver = "update"  # a step is the gradient at x^t, then x^{t+1}


class DCGDState(NamedTuple):
    t: int
    x: np.ndarray  # x^t (d,), every rank


class DCGD(MasterWorkerAlgorithm):
    """Distributed compressed GD without error feedback (unbiased C only)."""

    name = "dcgd"
    reference = "decomp.sim.masterworker:simulate_dcgd"
    requirement = "unbiased"

    def __init__(self, compressor: Compressor | None = None, *, downlink: str = "compressed",
                 batch_size: int | None = None, lr: float | None = None) -> None:
        super().__init__(compressor, batch_size=batch_size, lr=lr)
        self.downlink = check_downlink(self.name, downlink)

    def alpha(self, d: int) -> float:
        return 1.0  # DCGD's step is chosen explicitly or as 1/L times a multiplier

    def init(self, env: Env, x0: np.ndarray) -> DCGDState:
        self.check(x0.size)
        return DCGDState(0, x0.copy())

    def _step(self, env: Env, state: DCGDState) -> DCGDState:
        x, tp = state.x, env.transport
        C, payload, step = env.codec(self.compressor), None, state.t + 1
        nbytes = C.payload_bytes(x.size, x.dtype)
        if tp.is_worker:
            payload = encode_or_poison(C, self.grad(env, x, step), env.key(step), nbytes)
        payloads = collect(self, env, payload, nbytes)
        _update_x(self, env, payloads, x, -env.lr, step)  # x − γ (1/n) Σ_i C(∇f_i)
        return DCGDState(step, x)

    # ---- declarations (decomp.torch.oracle, decomp.netmodel) ----
    torch_driver = "update"  # a step is the gradient at x^t, then x^{t+1}
    decodes_own = False  # no per-worker state to update from its own payload
