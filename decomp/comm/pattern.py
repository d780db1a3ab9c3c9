"""What one step of a method sends and decodes, as data (no pricing).

Every algorithm class declares its step's communication as a list of :class:`Call` values
(``comm_pattern(d, n, degree, master=, dtype=)``) and its codec work as :class:`CodecOp`
values (``codec_ops(n, degree, master=)``); :mod:`decomp.netmodel` prices them with the α–β
model, and tests hold them against the bytes the reference and the MPI run count.

:func:`bcast_bytes_calls` lists the Bcasts of :meth:`decomp.comm.MasterWorker.broadcast_bytes`
for a payload of a given size (the transport's chunking, so it lives with the transport).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from decomp.comm.masterworker import FIRST_MAX
from decomp.errors import ConfigError

__all__ = ["CALLS", "CODEC_OPS", "MASTERS", "Call", "CodecOp", "bcast_bytes_calls",
           "master_world", "tree_calls"]

#: the communication calls a step is made of (reduce: a subtree's sum sent to its parent;
#: scatter: a root's B bytes cut into n blocks, binomial; sendrecv: one round of the tree
#: aggregation's schedule, every rank sending fan messages of at most B bytes at once)
CALLS = ("exchange", "gather", "broadcast", "allgather", "allreduce", "reduce", "scatter",
         "sendrecv")
#: the codec work a step does (axpy: one dense y += a·x pass over d)
CODEC_OPS = ("encode", "decode", "axpy")
#: where the master–worker family's master runs: on rank 0 with worker 0, or on its own rank
MASTERS = ("shared", "dedicated")


@dataclass(frozen=True)
class Call:
    """One communication call of a step.

    call: exchange | gather | broadcast | allgather | allreduce | reduce; nbytes: bytes per
    message (one rank's payload B); fan: messages of B serialised on the busiest link
    (exchange: the degree k; gather: the master's fan-in; reduce: 1; sendrecv: the messages
    one rank sends in the round;
    1 for the other collectives, whose algorithm sets it); n: ranks in the call; overlap:
    posted before the gradient and waited for after it (D-PSGD), so it hides behind the
    computation; what: a few words for tables; local: within one node (shared memory,
    priced on the node's own link by the cost model).
    """

    call: str
    nbytes: float
    fan: float
    n: int
    overlap: bool = False
    what: str = ""
    local: bool = False

    def __post_init__(self) -> None:
        if self.call not in CALLS:
            raise ValueError(f"unknown call {self.call!r} (one of {', '.join(CALLS)})")


@dataclass(frozen=True)
class CodecOp:
    """Codec work on a step's critical path: ``count`` × ``op`` (encode | decode | axpy) of
    ``compressor`` (a :class:`decomp.compress.Compressor`; None for axpy: one dense
    y += a·x pass over d)."""

    op: str
    compressor: Any
    count: float
    what: str = ""


def master_world(n: int, master: str) -> tuple[int, int]:
    """(ranks, the master's fan-in) of a master–worker run of n workers: shared (rank 0 is
    worker 0: n ranks, fan-in n − 1) or dedicated (n + 1 ranks, fan-in n)."""
    if master not in MASTERS:
        raise ConfigError(f"master must be shared or dedicated, got {master!r}")
    return (n, n - 1) if master == "shared" else (n + 1, n)


def bcast_bytes_calls(size: int, n: int, what: str) -> list[Call]:
    """The Bcasts of :meth:`decomp.comm.MasterWorker.broadcast_bytes` for a payload of steady
    ``size`` bytes: one chunk of ``size + size/16 + 8`` rounded up to 64 B (it carries the size
    and the payload), capped at FIRST_MAX (2 MiB); the rest, if any, in a second Bcast."""
    chunk = min(FIRST_MAX, max(64, (size + size // 16 + 8 + 63) & ~63))
    calls = [Call("broadcast", chunk, 1, n, what=what)]
    if size + 8 > chunk:
        calls.append(Call("broadcast", size + 8 - chunk, 1, n, what=what + " (rest)"))
    return calls


def _flat_rounds(n: int, d: int, k: float | None, per_leaf: int,
                 dtype: Any) -> list[tuple[str, float, str]]:
    """(op, bytes of the largest message, what) of each round of the flat schedule of
    :mod:`decomp.comm.tree` over n ranks whose own sums hold ``per_leaf`` payloads of k
    entries (None: dense): the fold, the L reduce-scatter steps, the L all-gather steps, the
    unfold. Entries of a sum of W payloads over a range of m (rounded up): W·k·m/d (their
    supports taken disjoint and spread evenly), at most m; from the step where a message is
    dense, its range stays dense (:class:`decomp.compress.merge.RangeSum`)."""
    from decomp.comm.tree import tree_depth
    from decomp.compress.merge import sum_message_bytes

    L = tree_depth(n)
    p = 1 << L
    rem = n - p
    out: list[tuple[str, float, str]] = []

    def msg(w: int, m: float) -> tuple[float, bool]:
        c = None if k is None else min(m, w * k * m / d)
        b = sum_message_bytes(c, math.ceil(m), dtype)
        return b, c is None or b == sum_message_bytes(None, math.ceil(m), dtype)

    dense = k is None
    if rem:
        b, _ = msg(per_leaf, d)
        out.append(("add", b, f"fold: {rem} rank(s) send their sum"))
    for s in range(L):
        w = per_leaf * ((1 << s) + min(rem, 1 << s))  # payloads in the largest group
        m = d / (1 << (s + 1))
        b, dn = (sum_message_bytes(None, math.ceil(m), dtype), True) if dense else msg(w, m)
        dense = dense or dn
        out.append(("add", b, f"reduce-scatter step {s}: sum of {w} payload(s), "
                              f"1/{1 << (s + 1)} of d"))
    for s in range(L):
        m = d * (1 << s) / p
        b = sum_message_bytes(None, math.ceil(m), dtype) if dense else msg(per_leaf * n, m)[0]
        out.append(("put", b, f"all-gather step {s}: {1 << s}/{p} of the total"))
    if rem:
        b = sum_message_bytes(None, d, dtype) if dense else msg(per_leaf * n, d)[0]
        out.append(("put", b, "unfold: the total to the folded rank(s)"))
    return out


def tree_calls(C: Any, d: int, n: int, dtype: Any, ranks_per_node: int = 1) -> list[Call]:
    """The rounds of ``aggregation = "tree"`` (:meth:`decomp.comm.MasterWorker.tree_sum`,
    the schedule of :mod:`decomp.comm.tree`) as ``sendrecv`` calls, one hop each, the
    largest message of the round (:func:`_flat_rounds`). ranks_per_node > 1 (the node-aware
    split, nodes of that many consecutive ranks): the flat schedule within a node (calls
    marked ``local``: shared memory), then among the ⌈n / ranks_per_node⌉ node leaders
    (each leader's sum holds a node's payloads), then the total down each node by a binomial
    tree (``local``, ⌈log2 ranks_per_node⌉ rounds)."""
    from decomp.compress.aggregate import sparse_count
    from decomp.compress.merge import sum_message_bytes

    k = sparse_count(C, d)
    q = max(1, min(int(ranks_per_node), n))
    if q == 1 or q == n:
        return [Call("sendrecv", b, 1, n, what=w) for _, b, w in _flat_rounds(n, d, k, 1, dtype)]
    nodes = -(-n // q)
    inner = [Call("sendrecv", b, 1, q, local=True, what="node: " + w)
             for _, b, w in _flat_rounds(q, d, k, 1, dtype)]
    lead = [Call("sendrecv", b, 1, nodes, what="leaders: " + w)
            for _, b, w in _flat_rounds(nodes, d, None if k is None else k, q, dtype)]
    dense_total = k is None or sum_message_bytes(min(d, n * k), d, dtype) == \
        sum_message_bytes(None, d, dtype)
    total = sum_message_bytes(None if dense_total else min(d, n * (k or 0)), d, dtype)
    down = [Call("sendrecv", total, 1, q, local=True,
                 what=f"node: the total down, binomial round {t}")
            for t in range((q - 1).bit_length())]
    return [*inner, *lead, *down]
