"""EF21-BC: EF21 with bidirectional compression (Fatkhullin, Sokolov, Gorbunov, Li, Richtárik
2021, *EF21 with Bells & Whistles*, Algorithm 5).

The workers run EF21 with C_w (``compressor``) on their estimators g̃_i; the master runs the
same Markov-compressor mechanism with C_M (``downlink_compressor``) on the *aggregate*
estimator and broadcasts only b^{t+1}. Every rank keeps g^t and takes the step itself::

    init:     g̃_i^0 = C_w(∇f_i(x^0)) ("compressed") or ∇f_i(x^0) ("full"); send
              master: g̃^0 = (1/n) Σ_i g̃_i^0;  b^0 = C_M(g̃^0 − 0) ("compressed") or g̃^0
              ("full", sent dense);  every rank: g^0 = b^0
    every rank: x^{t+1} = x^t − γ g^t
    worker i: c_i^t = C_w(∇f_i(x^{t+1}) − g̃_i^t);  g̃_i^{t+1} = g̃_i^t + c_i^t;  send c_i^t
    master:   g̃^{t+1} = g̃^t + (1/n) Σ_i c_i^t;  b^{t+1} = C_M(g̃^{t+1} − g^t);  broadcast b^{t+1}
    every rank: g^{t+1} = g^t + b^{t+1}

So the model itself never travels: the downlink is one C_M payload per step (the paper's
"master broadcasts compressed vector b^{t+1}"). With C_M = identity, g^{t+1} = g̃^{t+1} and this
is EF21 (up to the rounding of g^t + (g̃^{t+1} − g^t)). Every rank decodes the same b payload
into g, so g and x are identical everywhere bit for bit. A random C_M draws with the key
(seed, 2n, t) — ``env.key(t, Stream.MASTER)``, rank slot 2n, clear of the workers' streams
(slots < 2n).

Step size: the paper's experiments start every method from EF21's theory step with the
workers' α_w and tune multipliers of it; ``lr = "theory"`` gives that (see docs/algorithms.md
for why not the EF21-BC theorem's own bound).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from decomp.algorithms.base import (
    Env,
    MasterWorkerAlgorithm,
    decode_add_or_poison,
    descend_checked,
    diverged,
    encode_or_poison,
    update_from_sum,
)
from decomp.algorithms.ef21 import INITS
from decomp.algorithms.env import Stream
from decomp.comm.pattern import Call, CodecOp, bcast_bytes_calls
from decomp.compress import Compressor, Identity, make_compressor
from decomp.errors import ConfigError
from decomp.kernels.fused import all_finite


def downlink_codec(spec: Any, uplink: Compressor) -> Compressor:
    """C_M from a ``downlink_compressor`` option: a Compressor, a compressor spec (table or
    name, :func:`decomp.compress.make_compressor`) or None (the uplink compressor's kind)."""
    if spec is None:
        return uplink
    if isinstance(spec, (str, dict)):
        return make_compressor(spec)
    if isinstance(spec, Compressor):
        return spec
    raise ConfigError(f"ef21_bc: downlink_compressor must be a compressor table, got {spec!r}")


class EF21BCState(NamedTuple):
    t: int
    x: np.ndarray  # x^t (d,), every rank
    g_local: np.ndarray | None  # g̃_i^t (d,), this worker's estimator; None on a dedicated master
    g_tilde: np.ndarray | None  # g̃^t = (1/n) Σ_i g̃_i^t (d,), master only
    g: np.ndarray  # g^t (d,), the master's compressed estimate, every rank


class EF21BC(MasterWorkerAlgorithm):
    """EF21-BC with contractive C_w (``compressor``) and C_M (``downlink_compressor``);
    ``init`` in {"compressed", "full"}; ``batch_size`` -> minibatch gradients."""

    name = "ef21_bc"
    reference = "decomp.sim.ef21_variants:simulate_ef21_bc"

    def __init__(self, compressor: Compressor | None = None, *,
                 downlink_compressor: Any = None, init: str = "compressed",
                 batch_size: int | None = None, lr: float | None = None) -> None:
        super().__init__(compressor, batch_size=batch_size, lr=lr)
        if init not in INITS:
            raise ConfigError(f"{self.name}: init must be one of {INITS}, got {init!r}")
        self.init_mode = init
        self.downlink_compressor = downlink_codec(downlink_compressor, self.compressor)

    def check(self, d: int) -> None:
        super().check(d)
        self.downlink_compressor.check(d)
        self.downlink_compressor.alpha(d)  # C_M must be contractive too (α_M)

    def _broadcast_b(self, env: Env, codec: Compressor, g_tilde: np.ndarray | None,
                     g: np.ndarray, step: int) -> None:
        """Master: b = codec(g̃ − g), broadcast; every rank: g ← g + b (decoded from the same
        bytes everywhere). A non-finite g̃ − g travels as the poison payload (g becomes NaN
        on every rank, and the next step's descent stops them all)."""
        payload = None
        if env.transport.is_master:
            assert g_tilde is not None
            diff = np.subtract(g_tilde, g, out=env.scratch("bc_diff", g))
            payload = encode_or_poison(codec, diff, env.key(step, Stream.MASTER))
        down = env.transport.broadcast_bytes(payload)
        decode_add_or_poison(codec, down, g)

    def init(self, env: Env, x0: np.ndarray) -> EF21BCState:
        self.check(x0.size)
        tp = env.transport
        codec = self.compressor if self.init_mode == "compressed" else Identity()
        payload = g_local = None
        if tp.is_worker:
            assert env.problem is not None
            grad0 = env.problem.grad(x0)  # full local gradient, also with batch_size
            payload = encode_or_poison(codec, grad0, env.key(0),
                                       codec.payload_bytes(x0.size, x0.dtype))
            g_local = np.zeros_like(x0)
            decode_add_or_poison(codec, payload, g_local)
        payloads = tp.gather(payload, codec.payload_bytes(x0.size, x0.dtype))
        g_tilde = np.zeros_like(x0) if tp.is_master else None
        update_from_sum(env, codec, "model", payloads, g_tilde, 1.0, x0)
        g = np.zeros_like(x0)
        down = self.downlink_compressor if self.init_mode == "compressed" else Identity()
        self._broadcast_b(env, down, g_tilde, g, 0)
        if not all_finite(g):
            raise diverged(0, self.name, "aggregate g")
        return EF21BCState(0, x0.copy(), g_local, g_tilde, g)

    def _step(self, env: Env, state: EF21BCState) -> EF21BCState:
        x, g_local, g_tilde, g, tp = state.x, state.g_local, state.g_tilde, state.g, env.transport
        C = env.codec(self.compressor)
        step = state.t + 1
        descend_checked(env, x, g, step, self.name)  # x^{t+1} = x^t − γ g^t, every rank
        payload = None
        if tp.is_worker:
            assert g_local is not None
            diff = np.subtract(self.grad(env, x, step), g_local, out=env.scratch("diff", x))
            payload = encode_or_poison(C, diff, env.key(step), C.payload_bytes(x.size, x.dtype))
        payloads = tp.gather(payload, C.payload_bytes(x.size, x.dtype))
        if payload is not None:
            assert g_local is not None
            decode_add_or_poison(C, payload, g_local)  # g̃_i += c_i
        update_from_sum(env, C, "model", payloads, g_tilde, 1.0, x)  # master: g̃ += Σ c_i / n
        self._broadcast_b(env, env.codec(self.downlink_compressor), g_tilde, g, step)
        return EF21BCState(step, x, g_local, g_tilde, g)

    # ---- declarations (decomp.netmodel) ----
    def tree_refusal(self) -> str:
        return ("ef21_bc: the master compresses its aggregate g̃ for the broadcast "
                "(b = C_M(g̃ − g)); that downlink compression is the method, so it keeps the "
                "master")

    def downlink_calls(self, d: int, senders: float, world: int, dtype: Any) -> list[Call]:
        """b = C_M(g̃ − g), broadcast as bytes."""
        return bcast_bytes_calls(self.downlink_compressor.payload_bytes(d, dtype), world,
                                 "C_M(g~ - g)")

    def downlink_ops(self) -> list[CodecOp]:
        CM = self.downlink_compressor
        return [CodecOp("encode", CM, 1, "C_M"), CodecOp("decode", CM, 1, "apply b")]
