"""What one step of a method sends and decodes, as data (no pricing).

Every algorithm class declares its step's communication as a list of :class:`Call` values
(``comm_pattern(d, n, degree, master=, dtype=)``) and its codec work as :class:`CodecOp`
values (``codec_ops(n, degree, master=)``); :mod:`decomp.netmodel` prices them with the α–β
model, and tests hold them against the bytes the reference and the MPI run count.

:func:`bcast_bytes_calls` lists the Bcasts of :meth:`decomp.comm.MasterWorker.broadcast_bytes`
for a payload of a given size (the transport's chunking, so it lives with the transport).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from decomp.comm.masterworker import FIRST_MAX, split_down
from decomp.errors import ConfigError

__all__ = ["CALLS", "CODEC_OPS", "MASTERS", "Call", "CodecOp", "bcast_bytes_calls",
           "master_world", "tree_calls", "tree_down_calls", "tree_levels"]

#: the communication calls a step is made of (reduce: one level of the tree aggregation, a
#: subtree's sum sent to its parent; scatter: a root's B bytes cut into n blocks, binomial)
CALLS = ("exchange", "gather", "broadcast", "allgather", "allreduce", "reduce", "scatter")
#: the codec work a step does (axpy: one dense y += a·x pass over d)
CODEC_OPS = ("encode", "decode", "axpy")
#: where the master–worker family's master runs: on rank 0 with worker 0, or on its own rank
MASTERS = ("shared", "dedicated")


@dataclass(frozen=True)
class Call:
    """One communication call of a step.

    call: exchange | gather | broadcast | allgather | allreduce | reduce; nbytes: bytes per
    message (one rank's payload B); fan: messages of B serialised on the busiest link
    (exchange: the degree k; gather: the master's fan-in; reduce: 1, one level of the tree;
    1 for the other collectives, whose algorithm sets it); n: ranks in the call; overlap:
    posted before the gradient and waited for after it (D-PSGD), so it hides behind the
    computation; what: a few words for tables.
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


def tree_levels(C: Any, d: int, n: int, *,
                dense_switch: bool = False) -> list[tuple[int, int | None]]:
    """The levels of ``aggregation = "tree"`` over n ranks (:mod:`decomp.comm.tree`), j = 0 ..
    ceil(log2 n) − 1: (workers in the largest subtree whose sum crosses level j — 2^j, fewer
    at the top when n is not a power of two —, the entries of its sum message: that many
    payloads' k entries, their union taken disjoint (an upper bound), at most d; None for a
    compressor summed densely). dense_switch: None also from the level on where the sparse
    message would not be smaller than the dense one (float64)."""
    from decomp.compress.aggregate import sparse_count
    from decomp.compress.merge import sum_message_bytes

    k = sparse_count(C, d)
    dense = sum_message_bytes(None, d, "float64")
    out, j = [], 0
    while (1 << j) < n:
        w = min(1 << j, n - (1 << j))
        c = None if k is None else min(w * k, d)
        if dense_switch and c is not None and sum_message_bytes(c, d, "float64") >= dense:
            c = None
        out.append((w, c))
        j += 1
    return out


def tree_calls(C: Any, d: int, n: int, dtype: Any) -> list[Call]:
    """The reduction of ``aggregation = "tree"`` (:meth:`decomp.comm.MasterWorker.tree_sum`):
    one ``reduce`` call per level j, the message of the largest subtree's sum at that level
    (:func:`decomp.compress.merge.sum_message_bytes`: sparse while smaller than dense), one
    hop each; rank 0 receives one per level, in turn (the critical path). The total then
    comes down by :func:`bcast_bytes_calls`."""
    from decomp.compress.merge import sum_message_bytes

    return [Call("reduce", sum_message_bytes(c, d, dtype), 1, n,
                 what=f"tree level {j}: sum of {w} worker(s)")
            for j, (w, c) in enumerate(tree_levels(C, d, n))]


def tree_down_calls(size: int, n: int, what: str = "tree total") -> list[Call]:
    """How the tree's total of steady ``size`` bytes comes down
    (:meth:`decomp.comm.MasterWorker.tree_sum`): with n a power of two >= 8 and a long
    payload, its size (one int64 broadcast), a scatter of n blocks and a recursive-doubling
    all-gather of them; else :func:`bcast_bytes_calls`."""
    if not split_down(n, size):
        return bcast_bytes_calls(size, n, what)
    block = -(-size // n)
    return [Call("broadcast", 8, 1, n, what=f"{what}: size"),
            Call("scatter", n * block, 1, n, what=f"{what}: scatter"),
            Call("allgather", block, 1, n, what=f"{what}: all-gather (recursive doubling)")]
