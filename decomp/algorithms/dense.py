"""GD / SGD with a dense all-reduce (no compression): the uncompressed baseline.

x^{t+1} = x^t − γ (1/n) Σ_i ∇f_i(x^t)   (or minibatch gradients ∇f_i(x^t; ξ_i^t))

With a 16-bit wire (``wire_dtype = "float16" | "bfloat16"``, or the compressor
``{kind = "identity", value_dtype = ...}``: PyTorch DDP's ``fp16_compress_hook`` /
``bf16_compress_hook``) both directions carry 16-bit words (:mod:`decomp.compress.wire16`)::

    ĝ = r16((Σ_i r16(∇f_i(x^t))) / n)   (float32 sums in worker order)    x^{t+1} = x^t − γ ĝ

:func:`allreduce_descend` is this step for both families: ``sgd`` here and the decentralized
family's ``allreduce_sgd`` (:class:`~decomp.algorithms.allreduce.AllreduceSGD`) run the same
code — the gradient summed in place, then one fused pass, no per-step temporary.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from decomp.algorithms.base import Env, MasterWorkerAlgorithm, diverged
from decomp.comm.pattern import Call, master_world
from decomp.compress import Compressor, Identity
from decomp.compress.wire16 import WIRE16, mean16, narrow16, widen16
from decomp.errors import ConfigError
from decomp.kernels.fused import descend, descend_mean


def allreduce_descend(transport: Any, x: np.ndarray, g: np.ndarray, lr: float, n: int) -> bool:
    """x ← x − γ (Σ_i g_i) / n: g (d,) is summed over the ranks in place by a dense
    all-reduce (``transport.allreduce_sum``), then x (d,) is updated in one fused pass
    (numpy: ``x - lr * (g / n)``). True iff x is finite."""
    transport.allreduce_sum(g)
    t = x.dtype.type
    return bool(descend_mean(x, t(lr), g, t(n)))


class GDState(NamedTuple):
    t: int
    x: np.ndarray  # x^t, shape (d,), on every rank


def wire_dtype_of(name: str, compressor: Compressor | None, wire_dtype: str | None) -> str | None:
    """The 16-bit wire of a dense method from ``wire_dtype`` or an identity compressor's
    ``value_dtype`` (the same thing said twice must agree; any other compressor is refused)."""
    if wire_dtype is not None and wire_dtype not in WIRE16:
        raise ConfigError(f"{name}: wire_dtype must be one of {sorted(WIRE16)} (or unset: the "
                          f"model's dtype), got {wire_dtype!r}")
    if compressor is None:
        return wire_dtype
    if type(compressor) is not Identity:
        raise ConfigError(f"{name} sends dense vectors: it takes no compressor but an identity "
                          f"with a 16-bit value_dtype (the wire), got {compressor!r}")
    vd = compressor.value_dtype
    if vd not in (None, *WIRE16):
        raise ConfigError(f"{name}: the identity's value_dtype must be float16 or bfloat16 "
                          f"(a 16-bit wire), got {vd!r}")
    if wire_dtype is not None and vd is not None and vd != wire_dtype:
        raise ConfigError(f"{name}: wire_dtype = {wire_dtype!r} but the compressor's value_dtype "
                          f"is {vd!r}: give one of them")
    return wire_dtype or vd


class GD(MasterWorkerAlgorithm):
    """Gradient descent with MPI Allreduce of dense gradients (``batch_size`` -> SGD).

    wire_dtype: None (the model's dtype, MPI's sum) or "float16" / "bfloat16": both ways in
    16 bits (module doc); an identity compressor with that ``value_dtype`` says the same."""

    name = "gd"
    reference = "decomp.sim.masterworker:simulate_gd"
    uses_compressor = False
    #: takes ``compressor = identity`` with a 16-bit value_dtype as its wire (registry build)
    wire_compressor = True
    downlink = "allreduce"

    def __init__(self, compressor: Compressor | None = None, *, wire_dtype: str | None = None,
                 batch_size: int | None = None, lr: float | None = None, **unknown: Any) -> None:
        super().__init__(None, batch_size=batch_size, lr=lr, **unknown)
        self.wire_dtype = wire_dtype_of(self.name, compressor, wire_dtype)

    def init(self, env: Env, x0: np.ndarray) -> GDState:
        return GDState(0, x0.copy())

    def _step(self, env: Env, state: GDState) -> GDState:
        x = state.x
        if env.transport.is_worker:
            g = self.grad(env, x, state.t + 1)  # may be a problem's buffer: summed in place
        else:  # a dedicated master joins the all-reduce with zeros
            g = env.scratch("zeros", x)
            g.fill(0)
        if self.wire_dtype is not None:
            ok = self._wire16_descend(env, x, g)
        else:
            ok = allreduce_descend(env.transport, x, g, env.lr, env.n)
        if not ok:
            raise diverged(state.t + 1, self.name)
        return GDState(state.t + 1, x)

    def _wire16_descend(self, env: Env, x: np.ndarray, g: np.ndarray) -> bool:
        """x ← x − γ ĝ with ĝ the 16-bit mean (module doc); True iff x is finite."""
        code = WIRE16[self.wire_dtype]  # type: ignore[index]
        words = env.scratch("wire16", shape=(x.size,), dtype=np.uint16)
        narrow16(g, code, words)
        n = env.n
        env.transport.allreduce_chunks(words, lambda rows: mean16(rows, code, n))
        mean = widen16(words, code, env.scratch("wire16_mean", shape=(x.size,),
                                                dtype=np.float32))
        if x.dtype != mean.dtype:  # a float64 model: the exact float32 values, widened
            wide = env.scratch("wire16_wide", x)
            wide[:] = mean
            mean = wide
        return bool(descend(x, x.dtype.type(env.lr), mean))

    def comm_pattern(self, d: int, n: int, degree: int = 0, *, master: str = "shared",
                     dtype: Any = np.float64, layout: Any = None) -> list[Call]:
        """One all-reduce of d values (2 bytes each on a 16-bit wire)."""
        if self.wire_dtype is None:
            return super().comm_pattern(d, n, degree, master=master, dtype=dtype)
        world, _ = master_world(n, master)
        return [Call("allreduce", 2 * d, 1, world, what=f"gradient mean, {self.wire_dtype}")]

    # ---- declarations (decomp.torch.oracle) ----
    torch_driver = "update"  # a step is the gradient at x^t, then x^{t+1}
