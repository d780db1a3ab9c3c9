"""Pricing one step of a registered method: its calls (declared by its class) on an α–β network.

Every algorithm class declares what one step sends (``comm_pattern``: a list of
:class:`decomp.comm.pattern.Call` values — call, bytes per message, messages on the busiest
link — read off its implementation: the bytes are ``C.payload_bytes(d, dtype)``, the bytes that
really cross MPI, a dense vector ``d · itemsize``) and its codec work (``codec_ops``).
:func:`step_pattern` and :func:`codec_ops` ask the algorithm object, built from the registry
(:func:`method_spec`); this module only prices. :func:`call_time` prices a call with the α–β
model (α seconds per message hop, β bytes/s per link)::

    exchange to k neighbours (one host link serialises its k sends)   α + k·B/β
    gather at the master, fan-in f (linear Gatherv)                   α + f·B/β
    reduce, a subtree's sum to its parent                             α + B/β
    sendrecv, one round of the tree aggregation (B: the round's
      largest message, fan: the messages one rank sends)              α + fan·B/β
    scatter of B bytes from one rank (binomial)                       Lα + (n−1)/n·B/β
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
A call within one node (``local``: the tree's node-aware split) is priced on shared memory,
α = :data:`LOCAL_ALPHA`, β = :data:`LOCAL_BETA`, whatever the network.

:func:`codec_ops` lists the compression work on the step's critical path (the master's, for
the master–worker family: its own worker's encode, the decode of every payload, the sum's
re-encoding), priced by :mod:`decomp.netmodel.calibrate`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from decomp.algorithms import registry
from decomp.comm.delay import rounds
from decomp.comm.pattern import Call, CodecOp, bcast_bytes_calls
from decomp.compress import Compressor, bind_attributes, make_compressor
from decomp.compress.aggregate import sum_payload_bytes
from decomp.errors import ConfigError
from decomp.layout import Layout

__all__ = ["ALLREDUCE_ALGORITHMS", "BCAST_LONG", "BCAST_SHORT", "HOPS", "LOCAL_ALPHA",
           "LOCAL_BETA", "Call", "CodecOp",
           "MethodSpec", "bcast_bytes_calls", "call_time", "codec_ops", "hops", "link_bytes",
           "method_spec", "step_pattern", "sum_payload_bytes"]

ALLREDUCE_ALGORITHMS = ("rabenseifner", "ring", "recursive-doubling")
HOPS = ("algorithm", "emulated")
#: a message within one node (shared memory): seconds per hop, bytes/s (MPICH's shared-memory
#: channel on a current server; the network's α, β price every other call)
LOCAL_ALPHA = 1e-6
LOCAL_BETA = 5e9
#: MPICH's broadcast switch points (bytes)
BCAST_SHORT = 12288
BCAST_LONG = 524288


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
    if c.call in ("exchange", "gather", "reduce", "sendrecv"):
        return 1
    if c.call in ("allgather", "scatter"):
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
    if c.call in ("exchange", "gather", "reduce", "sendrecv"):
        return c.fan * B
    if c.call == "allgather":
        return (n - 1) * B
    if c.call == "scatter":
        return (n - 1) / n * B
    if c.call == "broadcast":
        return _L(n) * B if _bcast_algorithm(B, n) == "binomial" else 2 * (n - 1) / n * B
    if _check_allreduce(allreduce) == "recursive-doubling":
        return _L(n) * B
    return 2 * (n - 1) / n * B


def call_time(c: Call, alpha: float, beta: float, allreduce: str = "rabenseifner",
              mode: str = "algorithm") -> float:
    """Seconds of one call: hops · α + link bytes / β (α seconds, β bytes/s; a ``local``
    call: :data:`LOCAL_ALPHA`, :data:`LOCAL_BETA`)."""
    if c.local:
        alpha, beta = LOCAL_ALPHA, LOCAL_BETA
    return hops(c, allreduce, mode) * alpha + link_bytes(c, allreduce) / beta


def _check_allreduce(name: str) -> str:
    if name not in ALLREDUCE_ALGORITHMS:
        raise ConfigError(f"unknown all-reduce algorithm {name!r} (one of "
                          f"{', '.join(ALLREDUCE_ALGORITHMS)})")
    return name


@dataclass(frozen=True)
class MethodSpec:
    """A method as the cost model needs it: registry name, compressor (None: dense), resolved
    options (the class defaults overridden by the config), batch size, label, and the
    algorithm object (``alg``) that declares its traffic (``comm_pattern``, ``codec_ops``),
    its per-tensor compressors bound to the model's ``layout`` (None: one slot)."""

    algorithm: str
    compressor: Compressor | None
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    batch_size: int | None = None
    label: str = ""
    alg: Any = field(default=None, hash=False, compare=False, repr=False)
    layout: Layout | None = field(default=None, hash=False, compare=False, repr=False)

    @property
    def family(self) -> str:
        return registry.family(self.algorithm)

    @property
    def algorithm_object(self) -> Any:
        """The algorithm object (``alg``, or one built from the registry)."""
        return self.alg if self.alg is not None else _build(self)


def _build(s: MethodSpec) -> Any:
    """The algorithm object of a spec, for pricing: the class's ``pricing_options`` stand in
    for required options that were not given (they do not change the traffic)."""
    spec = registry.get(s.algorithm)
    kwargs = {**spec.cls.pricing_options,  # type: ignore[attr-defined]
              **{k: v for k, v in s.options.items() if v is not None}}
    if spec.uses_compressor:
        kwargs["compressor"] = s.compressor
    return spec.cls(batch_size=s.batch_size, **kwargs)


def method_spec(method: Any, layout: Layout | None = None) -> MethodSpec:
    """A :class:`MethodSpec` from a registry name, a ``[[methods]]`` table (dict), a
    :class:`decomp.config.MethodConfig` or a MethodSpec. Options not given take the class
    defaults; a required option without a default (the consensus_step of CHOCO, BEER) does not
    change the traffic and is left out (the class's ``pricing_options`` stand in for it).
    layout: the model's tensors (per-tensor compression, low-rank methods; None: one slot)."""
    if isinstance(method, MethodSpec):
        if layout is None or layout == method.layout:
            return method
        return replace(method, alg=bind_attributes(_build(method), layout), layout=layout)
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
    s = MethodSpec(name, c, resolved, batch, label or name)
    return MethodSpec(name, c, resolved, batch, label or name,
                      bind_attributes(_build(s), layout), layout)


def step_pattern(method: Any, d: int, n: int, degree: int = 2, *, master: str = "shared",
                 dtype: Any = np.float64, aggregation: str = "gather",
                 ranks_per_node: int = 1) -> list[Call]:
    """The communication calls of one step of ``method`` (anything :func:`method_spec`
    takes) for n workers (nodes), a d-vector of ``dtype`` and topology degree k
    (decentralized family), as its class declares them (``comm_pattern``). master: shared
    (rank 0 is worker 0: fan-in n − 1, n ranks) or dedicated (fan-in n, n + 1 ranks);
    aggregation: gather | tree (the master–worker family's sum; a class that takes no
    ``aggregation`` sums the same way under both); ranks_per_node: the tree's node-aware
    split (nodes of that many consecutive ranks; 1: flat)."""
    s = method_spec(method)
    if n < 1 or d < 1:
        raise ConfigError(f"need n >= 1 and d >= 1, got n = {n}, d = {d}")
    alg = s.algorithm_object
    extra = _aggregation(alg.comm_pattern, aggregation, ranks_per_node)
    return alg.comm_pattern(d, n, degree, master=master, dtype=dtype, layout=s.layout, **extra)


def _aggregation(fn: Any, aggregation: str, ranks_per_node: int = 1) -> dict[str, Any]:
    """``{"aggregation": ..., "ranks_per_node": ...}`` for a declaration that takes them (the
    master–worker base class's), else {} (dense, low-rank and decentralized methods:
    unaffected)."""
    params = inspect.signature(fn).parameters
    out: dict[str, Any] = {"aggregation": aggregation} if "aggregation" in params else {}
    if out and "ranks_per_node" in params:
        out["ranks_per_node"] = ranks_per_node
    return out


def codec_ops(method: Any, n: int, degree: int = 2, *, master: str = "shared",
              aggregation: str = "gather", d: int | None = None,
              ranks_per_node: int = 1) -> list[CodecOp]:
    """The compression (and mixing) work of one step on its slowest rank, as the method's
    class declares it (``codec_ops``). Master–worker: a worker's encode (before the gather),
    the shared master's decode into its own g_i (e_i for EF; DCGD keeps no state; a dedicated
    master has none), the decode of every payload into the sum (n, or the expected
    participants) and one axpy-like pass applying it on every rank; decentralized: one encode
    and 1 + k decodes per replica round, 1 + k dense axpy for the mixing of D-PSGD / DCD /
    ECD, n decodes for the all-gather baseline; on the tree (``aggregation``, d given) the
    tree's range work instead of the n decodes."""
    alg = method_spec(method).algorithm_object
    extra: dict[str, Any] = _aggregation(alg.codec_ops, aggregation, ranks_per_node)
    if extra:
        extra["d"] = d
    return alg.codec_ops(n, degree, master=master, **extra)
