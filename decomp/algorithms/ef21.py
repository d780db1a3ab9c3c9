"""EF21 (Richtárik, Sokolov, Fatkhullin 2021, Algorithm 1), EF21+ and EF21-SGD.

EF21::

    init: g_i^0 = C(∇f_i(x^0))  ("compressed", the paper)  or  ∇f_i(x^0)  ("full", authors' code)
          g^0 = (1/n) Σ_i g_i^0
    master:   x^{t+1} = x^t − γ g^t ;  broadcast x^{t+1}
    worker i: c_i^t = C(∇f_i(x^{t+1}) − g_i^t);  g_i^{t+1} = g_i^t + c_i^t;  send c_i^t
    master:   g^{t+1} = g^t + (1/n) Σ_i c_i^t

EF21-SGD: the same with ∇f_i replaced by a minibatch gradient of τ = ``batch_size`` rows; the
initial g_i^0 uses the full local gradient (as the authors' code does).

Downlink (``downlink``): "compressed" (default) — g^t is kept on every rank; the master
re-encodes Σ_i c_i^t (the union of the workers' Top-k index sets with summed values, bit-packed
indices, or dense when that is smaller; :mod:`decomp.compress.aggregate`) and broadcasts it,
and every rank applies g ← g + (1/n) Σ_i c_i and x ← x − γ g itself, so the model is never
broadcast. "model" — the master alone keeps g and broadcasts the dense x^{t+1} (the paper's
picture; kept for comparison). Both compute the same iterates, bit for bit.

EF21+: each worker forms b_i = C(∇f_i(x^{t+1})) and m_i = g_i^t + C(∇f_i(x^{t+1}) − g_i^t), keeps
the one closer to ∇f_i(x^{t+1}) (m_i on a tie) as g_i^{t+1}, and sends a flag byte (1 = b-branch)
followed by that branch's payload. The master keeps every worker's g_i (an n × d array) so it can
replace g_i on a b-branch; g^{t+1} = (1/n) Σ_i g_i^{t+1}. Bit cost per step: the payload plus 8
bits for the flag (one byte, so the payload stays byte-aligned). EF21+ broadcasts the dense
model (g^{t+1} is not an update of g^t by a compressed sum).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from decomp.algorithms.base import (
    Env,
    MasterWorkerAlgorithm,
    Own,
    check_downlink,
    collect,
    decode_add_or_poison,
    descend_and_broadcast,
    descend_checked,
    diverged,
    encode_or_poison,
    update_from_sum,
)
from decomp.algorithms.env import Stream
from decomp.comm.pattern import Call
from decomp.compress import Compressor, Identity
from decomp.errors import ConfigError

INITS = ("compressed", "full")


class EF21State(NamedTuple):
    t: int
    x: np.ndarray  # x^t (d,), every rank
    g_local: np.ndarray | None  # g_i^t (d,), this worker's estimator; None on a dedicated master
    g: np.ndarray | None  # g^t (d,): every rank (compressed downlink) or the master only


class EF21(MasterWorkerAlgorithm):
    """EF21 with contractive C; ``init`` in {"compressed", "full"}; ``batch_size`` -> EF21-SGD;
    ``downlink`` in {"compressed", "model"} (see the module doc)."""

    name = "ef21"
    init_round = True  # g_i^0 at step 0
    reference = "decomp.sim.masterworker:simulate_ef21"

    def __init__(self, compressor: Compressor | None = None, *, init: str = "compressed",
                 downlink: str = "compressed", batch_size: int | None = None,
                 lr: float | None = None) -> None:
        super().__init__(compressor, batch_size=batch_size, lr=lr)
        if init not in INITS:
            raise ConfigError(f"{self.name}: init must be one of {INITS}, got {init!r}")
        self.init_mode = init
        self.downlink = check_downlink(self.name, downlink)

    def _g0(self, env: Env, codec: Compressor, payloads: list[np.ndarray] | Own | None,
            x0: np.ndarray) -> np.ndarray | None:
        """g^0 = (1/n) Σ_i g_i^0 from the gathered payloads: on every rank (compressed
        downlink) or on the master (model)."""
        keep = self.downlink == "compressed" or env.transport.is_master
        g = np.zeros_like(x0) if keep else None
        if not update_from_sum(env, codec, self.downlink, payloads, g, 1.0, x0):
            raise diverged(0, self.name, "aggregate g")
        return g

    def _exchange(self, env: Env, payload: np.ndarray | None, g_local: np.ndarray | None,
                  g: np.ndarray | None, x: np.ndarray, codec: Compressor | None = None) -> None:
        """Gather the c_i (fixed size: no sizes round); a worker then takes g_i ← g_i + c_i
        while the master aggregates; then g ← g + (1/n) Σ_i c_i (every rank, or the
        master)."""
        C = env.codec(self.compressor) if codec is None else codec
        payloads = collect(self, env, payload, C.payload_bytes(x.size, x.dtype))
        if payload is not None:
            assert g_local is not None
            decode_add_or_poison(C, payload, g_local)  # g_i += c_i
        update_from_sum(env, C, self.downlink, payloads, g, 1.0, x)

    def _init_payload(self, env: Env, x0: np.ndarray) -> tuple[Compressor, np.ndarray | None,
                                                               np.ndarray | None]:
        """(codec used at t = 0, this worker's g_i^0, its payload)."""
        codec = self.compressor if self.init_mode == "compressed" else Identity()
        if not env.transport.is_worker:
            return codec, None, None
        assert env.problem is not None
        grad0 = env.problem.grad(x0)  # full local gradient, also for EF21-SGD
        payload = encode_or_poison(codec, grad0, env.key(0), codec.payload_bytes(x0.size,
                                                                                x0.dtype))
        g_local = np.zeros_like(x0)
        decode_add_or_poison(codec, payload, g_local)
        return codec, g_local, payload

    def init(self, env: Env, x0: np.ndarray) -> EF21State:
        self.check(x0.size)
        codec, g_local, payload = self._init_payload(env, x0)
        payloads = collect(self, env, payload, codec.payload_bytes(x0.size, x0.dtype))
        return EF21State(0, x0.copy(), g_local, self._g0(env, codec, payloads, x0))

    def descend(self, env: Env, x: np.ndarray, g: np.ndarray | None, step: int) -> None:
        """x^{t+1} = x^t − γ g^t: on every rank (compressed downlink), or on the master and
        broadcast (model); raises on every rank alike if x became non-finite."""
        if self.downlink == "compressed":
            assert g is not None
            descend_checked(env, x, g, step, self.name)
        else:
            descend_and_broadcast(env, x, g, step, self.name)

    def _step(self, env: Env, state: EF21State) -> EF21State:
        x, g_local, g, tp = state.x, state.g_local, state.g, env.transport
        step = state.t + 1
        self.descend(env, x, g, step)
        payload = None
        if tp.is_worker:
            assert g_local is not None
            diff = np.subtract(self.grad(env, x, step), g_local, out=env.scratch("diff", x))
            C = env.codec(self.compressor)
            payload = encode_or_poison(C, diff, env.key(step), C.payload_bytes(x.size, x.dtype))
        self._exchange(env, payload, g_local, g, x)
        return EF21State(step, x, g_local, g)

    # ---- declarations (decomp.torch.oracle) ----
    torch_driver = "estimator"  # a step is descend, then a gradient at the new point

    def torch_refusal(self) -> str:
        if self.downlink != "compressed":
            return (f"DistributedOptimizer: {type(self).__name__}(downlink={self.downlink!r}) "
                    "keeps g on the master only; use downlink='compressed' (the default), "
                    "which keeps the estimator g on every rank")
        return ""


class EF21PlusState(NamedTuple):
    t: int
    x: np.ndarray  # x^t (d,), every rank
    g_local: np.ndarray | None  # g_i^t (d,) on a worker
    G: np.ndarray | None  # (n, d): the master's copy of every g_i^t; None off the master
    g: np.ndarray | None  # g^t = mean_i G[i] (d,) on the master


class EF21Plus(EF21):
    """EF21+: per worker, the better of the EF21 step and a fresh compressed gradient."""

    name = "ef21_plus"
    reference = "decomp.sim.masterworker:simulate_ef21_plus"

    def __init__(self, compressor: Compressor | None = None, *, init: str = "compressed",
                 batch_size: int | None = None, lr: float | None = None) -> None:
        super().__init__(compressor, init=init, downlink="model", batch_size=batch_size, lr=lr)

    def init(self, env: Env, x0: np.ndarray) -> EF21PlusState:
        self.check(x0.size)
        codec, g_local, payload = self._init_payload(env, x0)
        payloads = env.transport.gather(payload, codec.payload_bytes(x0.size, x0.dtype))
        G = g = None
        if env.transport.is_master:
            assert payloads is not None
            G = np.zeros((env.n, x0.size), dtype=x0.dtype)
            for i, p in enumerate(payloads):
                decode_add_or_poison(codec, p, G[i])
            g = G.sum(axis=0) / env.n
        return EF21PlusState(0, x0.copy(), g_local, G, g)

    def _step(self, env: Env, state: EF21PlusState) -> EF21PlusState:
        x, g_local, G, g, tp = state.x, state.g_local, state.G, state.g, env.transport
        C = env.codec(self.compressor)
        step = state.t + 1
        descend_and_broadcast(env, x, g, step, self.name)
        payload = None
        if tp.is_worker:
            assert g_local is not None
            grad = self.grad(env, x, step)
            pm = encode_or_poison(C, grad - g_local, env.key(step))
            pb = encode_or_poison(C, grad, env.key(step, Stream.SECOND))
            if pm.size == 0 or pb.size == 0:  # non-finite gradient: poison (see base)
                g_local[:] = np.nan
                payload = np.zeros(1 + C.payload_bytes(x.size, x.dtype), np.uint8)
            else:
                m = g_local.copy()
                C.decode_add(pm, m)
                b = C.decode(pb).astype(x.dtype, copy=False)
                use_b = np.linalg.norm(b - grad) < np.linalg.norm(m - grad)
                g_local[:] = b if use_b else m
                payload = np.concatenate([np.array([1 if use_b else 0], np.uint8),
                                          pb if use_b else pm])
        payloads = tp.gather(payload, 1 + C.payload_bytes(x.size, x.dtype))
        if tp.is_master:
            assert G is not None and payloads is not None
            for i, p in enumerate(payloads):
                if p[0] == 1:
                    G[i] = 0
                decode_add_or_poison(C, p[1:], G[i])
            g = G.sum(axis=0) / env.n
        return EF21PlusState(step, x, g_local, G, g)

    # ---- declarations (decomp.torch.oracle, decomp.netmodel) ----
    encodes_per_step = 2  # the EF21 candidate and the fresh compressed gradient
    torch_driver = ""  # g lives on the master only: torch_refusal says why

    def uplink(self, nbytes: int, n: int, fanin: int, world: int) -> Call:
        return Call("gather", 1 + nbytes, fanin, world, what="flag + payload")

    def tree_refusal(self) -> str:
        return ("ef21_plus: the master keeps every worker's g_i (a b-branch replaces g_i, "
                "which a sum cannot carry), so it gathers at the master")

    def torch_refusal(self) -> str:
        return ("DistributedOptimizer: EF21Plus keeps g on the master only and broadcasts "
                "the model, so there is no estimator on every rank to hand to your optimizer; "
                "use EF21 or EF21SGDM")
