"""EF21-SGDM (Fatkhullin, Tyurin, Richtárik, NeurIPS 2023, "Momentum Provably Improves Error
Feedback!", Algorithm 1) — an extension of the EF21 family in decomp.

Per worker i a Polyak-momentum estimator v_i of ∇f_i, and EF21 applied to v_i instead of the
stochastic gradient::

    init:     v_i^0 = ∇f_i(x^0)  (full local gradient; or a minibatch of ``init_batch`` rows)
              g_i^0 = v_i^0 ("full", the paper's g_i^0 = v_i^0)  or  C(v_i^0) ("compressed")
              g^0 = (1/n) Σ_i g_i^0
    master:   x^{t+1} = x^t − γ g^t ;  broadcast x^{t+1}
    worker i: v_i^{t+1} = (1 − η) v_i^t + η ∇f_i(x^{t+1}; ξ_i^{t+1})
              c_i^t = C(v_i^{t+1} − g_i^t);  g_i^{t+1} = g_i^t + c_i^t;  send c_i^t
    master:   g^{t+1} = g^t + (1/n) Σ_i c_i^t

η ∈ (0, 1] is the momentum parameter (η = 1 is EF21-SGD exactly). Checked against the method
as restated in the follow-up on normalised EF21-SGDM (its Algorithm 2 without the
normalisation): the same momentum recursion v ← (1−η)v + η∇f_i(x; ξ) at the new point, and
C applied to v − g_i. The paper initialises with a (large) initial minibatch B_init; decomp uses
the full local gradient (as its EF21-SGD does) unless ``init_batch`` is given.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from decomp.algorithms.base import Env, collect, decode_add_or_poison, encode_or_poison
from decomp.algorithms.ef21 import EF21
from decomp.compress import Compressor, Identity
from decomp.errors import ConfigError
from decomp.kernels.fused import scale_add
from decomp.problems import oracle_grad


class EF21SGDMState(NamedTuple):
    t: int
    x: np.ndarray  # x^t (d,), every rank
    v: np.ndarray | None  # v_i^t (d,), this worker's momentum; None on a dedicated master
    g_local: np.ndarray | None  # g_i^t (d,) on a worker
    g: np.ndarray | None  # g^t (d,) on the master


class EF21SGDM(EF21):
    """EF21-SGDM (extension): EF21 on a per-worker momentum estimator v_i.

    Args:
        compressor: contractive C (e.g. ``TopK(ratio=0.01)``).
        eta: momentum parameter η ∈ (0, 1] (paper's notation; torch's momentum β = 1 − η).
        init: "full" (g_i^0 = v_i^0 sent uncompressed, the paper) or "compressed" (C(v_i^0)).
        batch_size: τ, minibatch size of ∇f_i(x; ξ) (None = full local gradient).
        init_batch: rows of the minibatch for v_i^0 (None = full local gradient).
        downlink: "compressed" (every rank applies the re-encoded Σ_i c_i) or "model" (the
            master broadcasts x), as :class:`~decomp.algorithms.EF21`.
        lr: optional default step size γ (a Trainer or Env lr given explicitly wins).
    """

    name = "ef21_sgdm"
    reference = "decomp.sim.ef21_sgdm:simulate_ef21_sgdm"

    def __init__(self, compressor: Compressor | None = None, *, eta: float = 0.1,
                 init: str = "full", downlink: str = "compressed",
                 batch_size: int | None = None, init_batch: int | None = None,
                 lr: float | None = None) -> None:
        super().__init__(compressor, init=init, downlink=downlink, batch_size=batch_size, lr=lr)
        if not 0.0 < eta <= 1.0:
            raise ConfigError(f"{self.name}: eta must be in (0, 1], got {eta}")
        if init_batch is not None and init_batch < 1:
            raise ConfigError(f"{self.name}: init_batch must be >= 1, got {init_batch}")
        self.eta = float(eta)
        self.init_batch = init_batch

    def init(self, env: Env, x0: np.ndarray) -> EF21SGDMState:
        self.check(x0.size)
        codec = self.compressor if self.init_mode == "compressed" else Identity()
        v = g_local = payload = None
        if env.transport.is_worker:
            assert env.problem is not None and env.worker is not None
            v = np.array(oracle_grad(env.problem, x0, seed=env.seed, worker=env.worker, step=0,
                                     batch_size=self.init_batch), dtype=x0.dtype, copy=True)
            payload = encode_or_poison(codec, v, env.key(0), codec.payload_bytes(x0.size,
                                                                                  x0.dtype))
            g_local = np.zeros_like(x0)
            decode_add_or_poison(codec, payload, g_local)
        payloads = collect(self, env, payload, codec.payload_bytes(x0.size, x0.dtype))
        return EF21SGDMState(0, x0.copy(), v, g_local, self._g0(env, codec, payloads, x0))

    def _step(self, env: Env, state: EF21SGDMState) -> EF21SGDMState:  # type: ignore[override]
        x, v, g_local, g, tp = state.x, state.v, state.g_local, state.g, env.transport
        step = state.t + 1
        self.descend(env, x, g, step)
        payload = None
        if tp.is_worker:
            assert v is not None and g_local is not None
            t = x.dtype.type  # v_i ← (1 − η) v_i + η ∇f_i(x^{t+1}; ξ), one fused pass
            scale_add(v, t(1.0 - self.eta), t(self.eta), self.grad(env, x, step))
            diff = np.subtract(v, g_local, out=env.scratch("diff", x))
            C = env.codec(self.compressor)
            payload = encode_or_poison(C, diff, env.key(step), C.payload_bytes(x.size, x.dtype))
        self._exchange(env, payload, g_local, g, x)  # g_i += c_i;  g += (1/n) Σ_i c_i
        return EF21SGDMState(step, x, v, g_local, g)
