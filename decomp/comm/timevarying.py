"""Neighbour exchange over a time-varying schedule W_0, W_1, ... (period τ).

:class:`TimeVaryingNeighborhood` is the transport of a decentralized method whose mixing
matrix changes with the step (``[topology] schedule = "one-peer-hypercube"``, see
docs/topologies.md). It builds one :class:`~decomp.comm.Neighborhood` per *distinct* W_t of
one period, once, at construction (collective; a schedule step need not be connected), and
:meth:`select` makes W_t the current one. Nothing is allocated per step: each member keeps
its own receive buffer and persistent requests across periods.

Everything a step reads goes to the current member: ``sources``, ``destinations``,
``weights``, ``self_weight``, ``indegree``, ``outdegree``, ``exchange``,
``exchange_start`` / ``exchange_finish``, ``received_rows``. So an algorithm written for a
static W runs unchanged on a schedule once ``select(t)`` was called before step t → t + 1
(:meth:`DecentralizedAlgorithm.step` calls it on every
:class:`~decomp.comm.protocols.NeighborTransport`; a no-op on a static W).
Whole-communicator operations (``allreduce_sum``,
``allgather``, ``allreduce_uncounted``, ``min_uncounted``) use the first member. All members
count into one :class:`~decomp.comm.ByteCounter` (:attr:`bytes`).

For per-edge state (the replicas of DCD/CHOCO on a schedule): :attr:`peers` lists every node
this rank exchanges with in some step of a period, ascending, and :meth:`slot` maps a peer to
its index there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from decomp.comm.counters import ByteCounter
from decomp.comm.neighborhood import Neighborhood
from decomp.errors import UsageError


class TimeVaryingNeighborhood:
    """Payload exchange along the edges of W_t, for a periodic schedule (collective).

    Args:
        schedule: a :class:`decomp.topologies.MixingSchedule` (``schedule(t)`` is W_t,
            ``schedule.period`` its period, ``schedule.n == comm.size``).
        comm: an ``mpi4py.MPI.Intracomm``.
        method: the wire method of every member (:data:`decomp.comm.EXCHANGE_METHODS`).

    Attributes:
        schedule, period: the schedule and τ.
        members: the Neighborhoods of the distinct W_t of a period, in order of first use.
        mixing: the schedule (what the runner logs: ``name``, ``rho``).
        rank, size, comm: as for :class:`Neighborhood`.
        peers: every j != rank that is a source or a destination of this rank in some W_t,
            ascending.
        bytes: the one byte counter every member adds to.
        step: the t of the W_t last selected (0 after construction).
    """

    #: W_t changes with the step (:class:`~decomp.comm.protocols.NeighborTransport`)
    time_varying = True

    def __init__(self, schedule: Any, comm: Any, *, method: str = "auto") -> None:
        from decomp.topologies.comm import matrix_digest

        self.schedule = schedule
        self.mixing = schedule
        self.period = int(schedule.period)
        self.comm = comm
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()
        self.bytes = ByteCounter()
        members: list[Neighborhood] = []
        seen: dict[int, int] = {}
        index: list[int] = []
        for k in range(self.period):
            W = schedule(k)
            digest = matrix_digest(W)
            if digest not in seen:
                nb = Neighborhood(W, comm, method=method, connected=False)
                nb.bytes = self.bytes  # one count for the whole run
                seen[digest] = len(members)
                members.append(nb)
            index.append(seen[digest])
        self.members: tuple[Neighborhood, ...] = tuple(members)
        self._index = tuple(index)
        self.peers: tuple[int, ...] = tuple(sorted(
            {j for nb in members for j in (*nb.sources, *nb.destinations)}))
        self._slots = {j: k for k, j in enumerate(self.peers)}
        self.step = 0
        self.current: Neighborhood = members[index[0]]

    # ------------------------------------------------------------------ the step's W_t
    def select(self, t: int) -> Neighborhood:
        """Make W_t (``t mod period``) current for the step t → t + 1; returns its member."""
        if self.current._pending is not None:
            raise UsageError("select: an exchange of the previous W_t is not finished "
                             "(call exchange_finish first)")
        self.step = int(t)
        self.current = self.members[self._index[int(t) % self.period]]
        return self.current

    @property
    def worker(self) -> int:
        """This node's index (= rank): names its shard and random streams."""
        return self.rank

    def slot(self, j: int) -> int:
        """Index of peer j in :attr:`peers` (the row of its per-edge replica)."""
        return self._slots[j]

    @property
    def sources(self) -> tuple[int, ...]:
        return self.current.sources

    @property
    def destinations(self) -> tuple[int, ...]:
        return self.current.destinations

    @property
    def weights(self) -> dict[int, float]:
        return self.current.weights

    @property
    def self_weight(self) -> float:
        return self.current.self_weight

    @property
    def indegree(self) -> int:
        return self.current.indegree

    @property
    def outdegree(self) -> int:
        return self.current.outdegree

    @property
    def method(self) -> str:
        return self.current.method

    def exchange(self, payload: np.ndarray, nbytes: int | None = None) -> dict[int, np.ndarray]:
        """:meth:`Neighborhood.exchange` on W_t."""
        return self.current.exchange(payload, nbytes)

    def exchange_start(self, payload: np.ndarray, nbytes: int | None = None) -> None:
        """:meth:`Neighborhood.exchange_start` on W_t."""
        self.current.exchange_start(payload, nbytes)

    def exchange_finish(self) -> dict[int, np.ndarray]:
        """:meth:`Neighborhood.exchange_finish` on W_t."""
        return self.current.exchange_finish()

    def swap(self, payloads: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """:meth:`Neighborhood.swap` on W_t."""
        return self.current.swap(payloads)

    def received_rows(self, dtype: Any, d: int) -> np.ndarray:
        """:meth:`Neighborhood.received_rows` of W_t's last exchange."""
        return self.current.received_rows(dtype, d)

    # ------------------------------------------------------------------ whole communicator
    def allreduce_sum(self, vec: np.ndarray) -> None:
        self.members[0].allreduce_sum(vec)

    def allgather(self, payload: np.ndarray, nbytes: int | None = None) -> list[np.ndarray]:
        return self.members[0].allgather(payload, nbytes)

    def allreduce_uncounted(self, vec: np.ndarray) -> None:
        self.members[0].allreduce_uncounted(vec)

    def min_uncounted(self, value: int) -> int:
        return self.members[0].min_uncounted(value)

    def close(self) -> None:
        """Free every member's requests and communicator (collective)."""
        for nb in self.members:
            nb.close()


#: the transports of the decentralized family (for ``isinstance``)
NEIGHBOURHOODS = (Neighborhood, TimeVaryingNeighborhood)

__all__ = ["NEIGHBOURHOODS", "TimeVaryingNeighborhood"]
