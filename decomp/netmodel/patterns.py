"""What one step of each registered method sends: its exchange pattern and its codec work.

:func:`step_pattern` lists the communication calls of one step as :class:`Call` values —
(call, bytes per message, messages on the busiest link) — read off the implementation in
:mod:`decomp.algorithms` (not the papers): the bytes are ``C.payload_bytes(d, dtype)``, the
bytes that really cross MPI, and a dense vector is ``d · itemsize``. :func:`call_time` prices
a call with the α–β model (α seconds per message hop, β bytes/s per link)::

    exchange to k neighbours (one host link serialises its k sends)   α + k·B/β
    gather at the master, fan-in f (linear Gatherv)                   α + f·B/β
    broadcast, binomial tree (B < 12 KiB or n < 8)                    L(α + B/β)
    broadcast, scatter + recursive-doubling allgather (B < 512 KiB,
      n a power of two)                                               2Lα + 2(n−1)/n·B/β
    broadcast, scatter + ring allgather (van de Geijn; else)          (L + n − 1)α + 2(n−1)/n·B/β
    allreduce ring                                                    2(n−1)α + 2(n−1)/n·B/β
    allreduce recursive doubling                                      L(α + B/β)
    allreduce Rabenseifner (reduce-scatter + allgather; default)      2Lα + 2(n−1)/n·B/β
    allgather (recursive doubling) of B per rank                      Lα + (n−1)·B/β

with L = ceil(log2 n). The broadcast thresholds are MPICH's (``MPIR_CVAR_BCAST_SHORT_MSG_SIZE``
= 12288, ``..._LONG_MSG_SIZE`` = 524288, binomial below 8 ranks). With ``hops = "emulated"``
the α multiplier of every call is :func:`decomp.comm.delay.rounds` instead — the hops
``[network] delay_ms`` adds in an emulated run (1, 1, L, L, 2L) — for comparing with those runs.

:func:`codec_ops` lists the compression work on the step's critical path (the master's, for
the master–worker family: its own worker's encode, the decode of every payload, the sum's
re-encoding), priced by :mod:`decomp.netmodel.calibrate`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decomp.algorithms import registry
from decomp.comm.delay import rounds
from decomp.comm.masterworker import FIRST_MAX
from decomp.compress import Compressor, make_compressor
from decomp.compress.aggregate import index_bits
from decomp.compress.base import HEADER_BYTES
from decomp.compress.randk import RandK
from decomp.compress.topk import TopK
from decomp.errors import ConfigError
from decomp.kernels.bits import packed_bytes
from decomp.participation import participation_probability

__all__ = ["ALLREDUCE_ALGORITHMS", "BCAST_LONG", "BCAST_SHORT", "HOPS", "Call", "CodecOp",
           "MethodSpec", "bcast_bytes_calls", "call_time", "codec_ops", "hops", "link_bytes",
           "method_spec", "step_pattern", "sum_payload_bytes"]

ALLREDUCE_ALGORITHMS = ("rabenseifner", "ring", "recursive-doubling")
HOPS = ("algorithm", "emulated")
#: MPICH's broadcast switch points (bytes)
BCAST_SHORT = 12288
BCAST_LONG = 524288
CALLS = ("exchange", "gather", "broadcast", "allgather", "allreduce")


@dataclass(frozen=True)
class Call:
    """One communication call of a step.

    call: exchange | gather | broadcast | allgather | allreduce; nbytes: bytes per message
    (one rank's payload B); fan: messages of B serialised on the busiest link (exchange: the
    degree k; gather: the master's fan-in; 1 for the other collectives, whose algorithm sets
    it); n: ranks in the call; overlap: posted before the gradient and waited for after it
    (D-PSGD), so it hides behind the computation; what: a few words for tables.
    """

    call: str
    nbytes: float
    fan: float
    n: int
    overlap: bool = False
    what: str = ""

    def __post_init__(self) -> None:
        if self.call not in CALLS:
            raise ValueError(f"unknown call {self.call!r} (one of {', '.join(CALLS)})")


def _L(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


def _bcast_algorithm(nbytes: float, n: int) -> str:
    if nbytes < BCAST_SHORT or n < 8:
        return "binomial"
    if nbytes < BCAST_LONG and n & (n - 1) == 0:
        return "scatter-doubling"
    return "scatter-ring"


def hops(c: Call, allreduce: str = "rabenseifner", mode: str = "algorithm") -> int:
    """Dependent message hops of a call (its α multiplier)."""
    if mode == "emulated":
        return rounds(c.call, c.n)
    if mode != "algorithm":
        raise ConfigError(f"hops must be one of {HOPS}, got {mode!r}")
    n, L = c.n, _L(c.n)
    if n <= 1:
        return 0
    if c.call in ("exchange", "gather"):
        return 1
    if c.call == "allgather":
        return L
    if c.call == "broadcast":
        alg = _bcast_algorithm(c.nbytes, n)
        return {"binomial": L, "scatter-doubling": 2 * L, "scatter-ring": L + n - 1}[alg]
    return {"ring": 2 * (n - 1), "recursive-doubling": L, "rabenseifner": 2 * L}[
        _check_allreduce(allreduce)]


def link_bytes(c: Call, allreduce: str = "rabenseifner") -> float:
    """Bytes serialised on the busiest link by one call (its 1/β multiplier)."""
    n, B = c.n, float(c.nbytes)
    if n <= 1:
        return 0.0
    if c.call in ("exchange", "gather"):
        return c.fan * B
    if c.call == "allgather":
        return (n - 1) * B
    if c.call == "broadcast":
        return _L(n) * B if _bcast_algorithm(B, n) == "binomial" else 2 * (n - 1) / n * B
    if _check_allreduce(allreduce) == "recursive-doubling":
        return _L(n) * B
    return 2 * (n - 1) / n * B


def call_time(c: Call, alpha: float, beta: float, allreduce: str = "rabenseifner",
              mode: str = "algorithm") -> float:
    """Seconds of one call: hops · α + link bytes / β (α seconds, β bytes/s)."""
    return hops(c, allreduce, mode) * alpha + link_bytes(c, allreduce) / beta


def _check_allreduce(name: str) -> str:
    if name not in ALLREDUCE_ALGORITHMS:
        raise ConfigError(f"unknown all-reduce algorithm {name!r} (one of "
                          f"{', '.join(ALLREDUCE_ALGORITHMS)})")
    return name


@dataclass(frozen=True)
class MethodSpec:
    """A method as the cost model needs it: registry name, compressor (None: dense), resolved
    options (the class defaults overridden by the config), batch size, label."""

    algorithm: str
    compressor: Compressor | None
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    batch_size: int | None = None
    label: str = ""

    @property
    def family(self) -> str:
        return registry.family(self.algorithm)


def method_spec(method: Any) -> MethodSpec:
    """A :class:`MethodSpec` from a registry name, a ``[[methods]]`` table (dict), a
    :class:`decomp.config.MethodConfig` or a MethodSpec. Options not given take the class
    defaults; a required option without a default (CHOCO's gamma_c, BEER's gamma) does not
    change the traffic and is left out."""
    if isinstance(method, MethodSpec):
        return method
    if isinstance(method, str):
        method = {"algorithm": method}
    if isinstance(method, Mapping):
        m = dict(method)
        name = m.pop("algorithm", None)
        if name is None:
            raise ConfigError("a method table needs an 'algorithm'")
        comp, batch, label = m.pop("compressor", None), m.pop("batch_size", None), \
            m.pop("name", None)
        for k in ("lr", "lr_multiplier"):
            m.pop(k, None)
        opts = m
    else:  # a MethodConfig
        name, comp, batch, label = method.algorithm, method.compressor, method.batch_size, \
            method.name
        opts = dict(method.options)
    spec = registry.get(name)
    known = spec.options
    bad = [k for k in opts if k not in known]
    if bad:
        raise ConfigError(f"{name}: unknown option {bad[0]!r} (its options: "
                          f"{', '.join(known) or 'none'})")
    resolved = {k: v for k, v in known.items() if v is not inspect.Parameter.empty}
    resolved.update(opts)
    if spec.uses_compressor:
        c = make_compressor(comp if comp is not None else spec.default_compressor)
    elif comp is not None:
        raise ConfigError(f"{name} sends dense vectors and takes no compressor")
    else:
        c = None
    return MethodSpec(name, c, resolved, batch, label or name)


def sum_payload_bytes(C: Compressor, d: int, senders: float, dtype: Any = np.float64) -> int:
    """Bytes of the master's compressed-downlink sum of ``senders`` payloads
    (:class:`decomp.compress.aggregate.SumEncoder`): for Top-k / Rand-k the union of the index
    sets — taken disjoint, an upper bound, ``min(senders·k, d)`` entries — sparse or dense,
    whichever is smaller; for other compressors the dense sum."""
    isz = np.dtype(dtype).itemsize
    dense = HEADER_BYTES + d * isz
    inner = getattr(C, "inner", C)  # as aggregate.sparse_parts
    if type(inner) not in (TopK, RandK):
        return dense
    count = min(int(math.ceil(senders)) * inner.k_for(d), d)
    return min(dense, HEADER_BYTES + count * isz + packed_bytes(count, index_bits(d)))


def bcast_bytes_calls(size: int, n: int, what: str) -> list[Call]:
    """The Bcasts of :meth:`decomp.comm.MasterWorker.broadcast_bytes` for a payload of steady
    ``size`` bytes: one chunk of ``size + size/16 + 8`` rounded up to 64 B (it carries the size
    and the payload), capped at FIRST_MAX (2 MiB); the rest, if any, in a second Bcast."""
    chunk = min(FIRST_MAX, max(64, (size + size // 16 + 8 + 63) & ~63))
    calls = [Call("broadcast", chunk, 1, n, what=what)]
    if size + 8 > chunk:
        calls.append(Call("broadcast", size + 8 - chunk, 1, n, what=what + " (rest)"))
    return calls


def step_pattern(method: Any, d: int, n: int, degree: int = 2, *, master: str = "shared",
                 dtype: Any = np.float64) -> list[Call]:
    """The communication calls of one step of ``method`` (anything :func:`method_spec`
    takes) for n workers (nodes), a d-vector of ``dtype`` and topology degree k
    (decentralized family). master: shared (rank 0 is worker 0: fan-in n − 1, n ranks) or
    dedicated (fan-in n, n + 1 ranks)."""
    s = method_spec(method)
    if n < 1 or d < 1:
        raise ConfigError(f"need n >= 1 and d >= 1, got n = {n}, d = {d}")
    dense = d * np.dtype(dtype).itemsize
    C = s.compressor
    B = C.payload_bytes(d, dtype) if C is not None else dense
    name, o = s.algorithm, s.options
    if s.family == registry.DECENTRALIZED_FAMILY:
        if name == "allreduce_sgd":
            return [Call("allreduce", dense, 1, n, what="dense gradient sum")]
        if name == "allreduce_qsgd":
            return [Call("allgather", B, 1, n, what="compressed gradients")]
        if name == "dpsgd":
            return [Call("exchange", dense, degree, n, overlap=True, what="dense x_i")]
        if name == "beer":
            return [Call("exchange", B, degree, n, what="C(x - h)"),
                    Call("exchange", B, degree, n, what="C(v - g)")]
        return [Call("exchange", B, degree, n, what="replica update")]
    if master not in ("shared", "dedicated"):
        raise ConfigError(f"master must be shared or dedicated, got {master!r}")
    world = n if master == "shared" else n + 1
    fanin = n - 1 if master == "shared" else n
    if name in ("gd", "sgd", "sgdm"):
        return [Call("allreduce", dense, 1, world, what="dense gradient sum")]
    assert C is not None
    senders: float = n
    if name == "ef21_pp":
        p = participation_probability(n, float(o["p"]), o["sampling"])
        fan: float = p * fanin
        senders = p * n
        up = Call("gather", B, fan, world, what=f"participants' payloads (p = {p:g})")
    elif name == "ef21_plus":
        up = Call("gather", 1 + B, fanin, world, what="flag + payload")
    else:
        up = Call("gather", B, fanin, world, what="payloads")
    if name == "ef21_bc":
        CM = o.get("downlink_compressor")
        CM = make_compressor(CM) if CM is not None else C
        return [up, *bcast_bytes_calls(CM.payload_bytes(d, dtype), world, "C_M(g~ - g)")]
    downlink = "model" if name == "ef21_plus" else o.get("downlink", "compressed")
    if downlink == "model":
        return [up, Call("broadcast", dense, 1, world, what="dense model")]
    return [up, *bcast_bytes_calls(sum_payload_bytes(C, d, senders, dtype), world,
                                   "sum of payloads")]


@dataclass(frozen=True)
class CodecOp:
    """Codec work on a step's critical path: ``count`` × ``op`` (encode | decode | axpy) of
    ``compressor`` (None for axpy: one dense y += a·x pass over d)."""

    op: str
    compressor: Compressor | None
    count: float
    what: str = ""


def codec_ops(method: Any, n: int, degree: int = 2, *, master: str = "shared") -> list[CodecOp]:
    """The compression (and mixing) work of one step on its slowest rank. Master–worker: a
    worker's encode (before the gather), the shared master's decode into its own g_i (e_i for
    EF; DCGD keeps no state; a dedicated master has none), the decode of every payload into
    the sum (n, or the expected participants) and one axpy-like pass applying it on every
    rank; decentralized: one encode and 1 + k decodes per replica round, 1 + k dense axpy for
    the mixing of D-PSGD / DCD / ECD, n decodes for the all-gather baseline."""
    s = method_spec(method)
    C, name = s.compressor, s.algorithm
    if C is None:
        if name == "dpsgd":
            return [CodecOp("axpy", None, 1 + degree, "mixing")]
        return []
    if s.family == registry.DECENTRALIZED_FAMILY:
        if name == "allreduce_qsgd":
            return [CodecOp("encode", C, 1), CodecOp("decode", C, n, "every payload")]
        rounds_ = 2 if name == "beer" else 1
        ops = [CodecOp("encode", C, rounds_), CodecOp("decode", C, rounds_ * (1 + degree),
                                                        "own + neighbours' replicas")]
        if name in ("dcd_psgd", "ecd_psgd"):
            ops.append(CodecOp("axpy", None, 1 + degree, "mixing"))
        return ops
    senders: float = n
    if name == "ef21_pp":
        senders = participation_probability(n, float(s.options["p"]), s.options["sampling"]) * n
    # a worker's encode precedes the gather on any rank; the decode into its own g_i runs on
    # the master's path only when the master is also a worker (shared)
    own = 0 if master == "dedicated" else 1
    ops = [CodecOp("encode", C, 2 if name == "ef21_plus" else 1, "a worker's payload"),
           CodecOp("decode", C, 0 if name == "dcgd" else (2 if name == "ef21_plus" else 1) * own,
                   "own g_i / e_i"),
           CodecOp("decode", C, senders, "aggregate")]
    if name == "ef21_bc":
        CM = s.options.get("downlink_compressor")
        CM = make_compressor(CM) if CM is not None else C
        ops += [CodecOp("encode", CM, 1, "C_M"), CodecOp("decode", CM, 1, "apply b")]
    elif name != "ef21_plus" and s.options.get("downlink", "compressed") == "compressed":
        ops.append(CodecOp("axpy", None, 1, "apply the sum"))
    return ops
