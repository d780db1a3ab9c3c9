"""The transport contracts: what an algorithm may call on ``env.transport``.

Two :class:`typing.Protocol` s, one per family, implemented by the MPI transports
(:class:`~decomp.comm.MasterWorker`, :class:`~decomp.comm.Neighborhood`,
:class:`~decomp.comm.timevarying.TimeVaryingNeighborhood`) and by the in-memory thread
transports of :mod:`decomp.comm.threads` (the executable specification). Payloads are 1-D
contiguous ``uint8`` arrays everywhere (anything else is a
:class:`~decomp.errors.PayloadError`); returned payloads are views valid until the next call.

Each protocol also names its **counted calls** (:data:`MASTER_WORKER_CALLS`,
:data:`NEIGHBOR_CALLS`): the calls that move the algorithm's bytes and that the call-wrapping
proxies of :mod:`decomp.comm.proxy` (timing, emulated delay) wrap; everything else
(``rank``, ``bytes``, ``min_uncounted``, ...) reads through a proxy unchanged.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from decomp.comm.counters import ByteCounter

__all__ = ["COUNTED_CALLS", "MASTER_WORKER_CALLS", "NEIGHBOR_CALLS", "MasterWorkerTransport",
           "NeighborTransport"]

#: counted calls of :class:`MasterWorkerTransport` (wrapped by the proxies)
MASTER_WORKER_CALLS: tuple[str, ...] = (
    "gather", "gather_start", "gather_finish", "gather_subset", "gather_subset_group",
    "broadcast", "broadcast_bytes", "allreduce_sum", "allreduce_chunks", "tree_sum")
#: counted calls of :class:`NeighborTransport` (wrapped by the proxies)
NEIGHBOR_CALLS: tuple[str, ...] = (
    "exchange", "exchange_start", "exchange_finish", "swap", "allgather", "allreduce_sum")
#: every counted call of either protocol, in a fixed order
COUNTED_CALLS: tuple[str, ...] = tuple(dict.fromkeys(MASTER_WORKER_CALLS + NEIGHBOR_CALLS))


@runtime_checkable
class MasterWorkerTransport(Protocol):
    """The master–worker transport: rank 0 is the master; workers 0..n−1.

    Attributes: ``rank``, ``size`` (ranks), ``n_workers`` (n), ``worker`` (this rank's worker
    index, None on a dedicated master), ``is_master``, ``is_worker``, ``bytes`` (this rank's
    :class:`ByteCounter`), ``aggregation`` ("gather" | "tree": how the family sums payloads).
    """

    aggregation: str

    rank: int
    size: int
    n_workers: int
    worker: int | None
    is_master: bool
    is_worker: bool
    bytes: ByteCounter

    def gather(self, payload: np.ndarray | None,
               nbytes: int | None = None) -> list[np.ndarray] | None:
        """Every worker's payload at the master, in worker order (None elsewhere); ``nbytes``:
        the size every payload has (known to all ranks), None = sizes gathered first."""
        ...

    def gather_start(self, payload: np.ndarray | None, nbytes: int | None = None) -> None:
        """Post :meth:`gather`; the payload stays unchanged until :meth:`gather_finish`."""
        ...

    def gather_finish(self) -> list[np.ndarray] | None:
        """Complete :meth:`gather_start`: the master's list, None elsewhere."""
        ...

    def gather_subset(self, payload: np.ndarray | None, nbytes: int,
                      participants: np.ndarray) -> list[np.ndarray] | None:
        """The participants' (``participants``: (n,) bool, the same on every rank) payloads of
        ``nbytes`` each at the master, in worker order; None elsewhere."""
        ...

    def gather_subset_group(self, payload: np.ndarray | None, nbytes: int,
                            participants: np.ndarray) -> list[np.ndarray] | None:
        """:meth:`gather_subset` among the master and the participants only."""
        ...

    def broadcast(self, x: np.ndarray) -> None:
        """The master's x (d,) on every rank, in place."""
        ...

    def broadcast_bytes(self, payload: np.ndarray | None) -> np.ndarray:
        """The master's uint8 payload (None elsewhere) on every rank."""
        ...

    def allreduce_sum(self, vec: np.ndarray) -> None:
        """vec ← Σ over ranks of vec, in place (a dedicated master contributes zeros)."""
        ...

    def allreduce_chunks(self, words: np.ndarray, combine: Any) -> None:
        """uint16 ``words`` (d,) ← ``combine`` of every rank's words, elementwise, in place:
        ``combine(rows)`` gets (ranks, c) uint16 rows in rank order (a chunk of the columns)
        and returns (c,) uint16 (the 16-bit float all-reduce)."""
        ...

    def tree_sum(self, state: Any) -> np.ndarray:
        """Every rank's sum (``state``: this rank's :class:`decomp.compress.merge.RangeSum`,
        started with its payload) reduced by the fixed-order schedule of
        :mod:`decomp.comm.tree`; the total, as a downlink sum message, on every rank."""
        ...

    def allreduce_uncounted(self, vec: np.ndarray) -> None:
        """:meth:`allreduce_sum` for metrics: not counted as traffic."""
        ...


@runtime_checkable
class NeighborTransport(Protocol):
    """The neighbour transport of the decentralized family over W (static) or W_t (schedule).

    ``select(t)`` makes W_t current for the step t → t + 1 (a no-op on a static W); then
    ``sources`` (in-neighbours, ascending: the keys of :meth:`exchange`), ``destinations``,
    ``weights`` ({j: W_ij}, Python floats), ``self_weight`` (W_ii) are W_t's. ``peers``: every
    node this rank exchanges with over a period, ascending (static W: ``sources``), and
    ``slot(j)`` the index of peer j there (the row of its per-edge state). ``rank`` is the node
    i, ``worker`` the same index (it names shards and random streams), ``size`` the number of
    nodes; ``bytes`` this rank's :class:`ByteCounter`.
    """

    rank: int
    size: int
    bytes: ByteCounter
    #: True when W changes with the step (a schedule W_t): methods with per-edge state
    #: then keep one row per peer over a period
    time_varying: bool

    @property
    def worker(self) -> int: ...

    @property
    def sources(self) -> tuple[int, ...]: ...

    @property
    def destinations(self) -> tuple[int, ...]: ...

    @property
    def weights(self) -> dict[int, float]: ...

    @property
    def self_weight(self) -> float: ...

    @property
    def peers(self) -> tuple[int, ...]: ...

    def select(self, t: int) -> Any:
        """Make W_t current for the step t → t + 1 (static W: nothing to do)."""
        ...

    def slot(self, j: int) -> int:
        """Index of peer j in :attr:`peers`."""
        ...

    def exchange(self, payload: np.ndarray, nbytes: int | None = None) -> dict[int, np.ndarray]:
        """Send ``payload`` to every destination; ``{source: its payload}``."""
        ...

    def exchange_start(self, payload: np.ndarray, nbytes: int | None = None) -> None:
        """Post :meth:`exchange`; the payload stays unchanged until :meth:`exchange_finish`."""
        ...

    def exchange_finish(self) -> dict[int, np.ndarray]:
        """Complete :meth:`exchange_start`: ``{source: its payload}``."""
        ...

    def received_rows(self, dtype: Any, d: int) -> np.ndarray:
        """The last exchange's payloads as one (indegree, d) array of ``dtype`` (a view)."""
        ...

    def swap(self, payloads: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Pairwise exchange on a symmetric W_t: send ``payloads[j]`` (its own message) to each
        neighbour j and receive j's message to this node, of the same size; ``{j: payload}``."""
        ...

    def allreduce_sum(self, vec: np.ndarray) -> None:
        """vec ← Σ over all nodes of vec, in place."""
        ...

    def allgather(self, payload: np.ndarray, nbytes: int | None = None) -> list[np.ndarray]:
        """Every node's payload, in rank order."""
        ...

    def allreduce_uncounted(self, vec: np.ndarray) -> None:
        """:meth:`allreduce_sum` for metrics: not counted as traffic."""
        ...

    def min_uncounted(self, value: int) -> int:
        """The minimum of an integer over all nodes (the collective divergence flag)."""
        ...

    def close(self) -> None:
        """Free the transport's resources (collective)."""
        ...
