"""Neighbour exchange for the decentralized family: payloads travel along the edges of W.

:class:`Neighborhood` is built from a :class:`~decomp.topologies.MixingMatrix` and a
communicator. ``exchange(payload)`` sends this rank's uint8 payload to every out-neighbour
(the j with W_ji > 0) and returns ``{source: payload}`` for every in-neighbour (the j with
W_ij > 0), ascending by rank. For the symmetric W of the decentralized algorithms the two sets
are the same.

Wire methods (``method=``), all on the dist-graph communicator that
:func:`decomp.topologies.communicator` builds (its own MPI context, ranks unchanged):

- ``"persistent"``: point-to-point messages on persistent requests (``Send_init``/``Recv_init``
  created once per payload size, then ``Startall``/``Waitall``); the payload is copied into a
  persistent send buffer.
- ``"isend"``: plain ``Isend``/``Irecv`` per step into the persistent receive buffer.
- ``"neighbor"``: the MPI-3 neighbour collective ``Neighbor_allgather`` (``Neighbor_allgatherv``
  for variable sizes) on the dist-graph communicator.
- ``"auto"`` (default): ``"persistent"`` for fixed-size payloads of at most
  :data:`AUTO_PERSISTENT_MAX` bytes, ``"neighbor"`` otherwise — the faster of the two in each
  range (measurements in docs/design.md, "Neighbour exchange"; rerun them with
  :func:`decomp.bench.transport.neighborhood`).

Payload sizes: ``exchange(payload, nbytes)`` with ``nbytes`` known to every rank (a
compressor's ``payload_bytes(d, dtype)``, which the compressor contract defines as exact) needs
one message per edge. Without ``nbytes`` the sizes are exchanged first (one int64 per edge,
counted as control bytes), then the payloads.

Buffers are persistent: the receive buffer grows on demand and is reused; the returned arrays
are views into it, valid until the next ``exchange``. Byte accounting (:attr:`bytes`):
``up`` = payload bytes this rank sent (one copy per out-neighbour), ``down`` = payload bytes it
received, ``control`` = size messages.

The same object offers the whole-communicator operations the all-reduce baselines and the
metrics need: :meth:`allreduce_sum` and :meth:`allgather` (counted) and
:meth:`allreduce_uncounted` / :meth:`min_uncounted` (metrics, off the clock).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from decomp.comm.counters import ByteCounter
from decomp.errors import ConfigError, PayloadError, UsageError

#: wire methods for :meth:`Neighborhood.exchange`
EXCHANGE_METHODS = ("auto", "persistent", "isend", "neighbor")
#: largest fixed payload (bytes) that ``"auto"`` sends on persistent requests
AUTO_PERSISTENT_MAX = 8192
_TAG_PAYLOAD = 0x5D01
_TAG_SIZE = 0x5D02
_TAG_SWAP = 0x5D03


def _as_payload(payload: np.ndarray) -> np.ndarray:
    """``payload`` if it is a 1-D contiguous uint8 array, else a :class:`PayloadError`."""
    if not isinstance(payload, np.ndarray) or payload.dtype != np.uint8 or payload.ndim != 1:
        got = (f"{payload.dtype} array of shape {payload.shape}"
               if isinstance(payload, np.ndarray) else type(payload).__name__)
        raise PayloadError(f"payloads are 1-D uint8 numpy arrays (a compressor's encode "
                           f"output), got a {got}")
    if not payload.flags.c_contiguous:
        raise PayloadError("payloads must be contiguous: pass np.ascontiguousarray(payload)")
    return payload


class Neighborhood:
    """Payload exchange with the graph neighbours of W (collective constructor).

    Args:
        mixing: W with ``mixing.n == comm.size``; validated (doubly stochastic, symmetric unless
            directed, connected, pattern) by :func:`decomp.topologies.communicator`, which raises
            :class:`~decomp.topologies.TopologyError` (a ConfigError) on every rank otherwise.
        comm: an ``mpi4py.MPI.Intracomm`` (e.g. ``COMM_WORLD``); whole-communicator operations
            use it directly.
        method: one of :data:`EXCHANGE_METHODS`.
        connected: require W connected (False for one step W_t of a time-varying schedule,
            see :class:`decomp.comm.timevarying.TimeVaryingNeighborhood`).

    Attributes:
        rank, size: this rank and the number of ranks (= nodes of W).
        sources: in-neighbours j (W_ij > 0, j != rank), ascending: the keys of ``exchange``.
        destinations: out-neighbours (W_ji > 0, j != rank), ascending.
        weights: ``{j: W_ij}`` for j in sources (Python floats, so float32 stays float32).
        self_weight: W_ii.
        bytes: the :class:`ByteCounter` of this rank.

    Implements :class:`~decomp.comm.protocols.NeighborTransport` for a static W: ``select``
    is a no-op, ``peers`` = ``sources``, ``slot(j)`` = j's index in ``sources``.
    """

    #: W is the same at every step
    time_varying = False

    def __init__(self, mixing: Any, comm: Any, *, method: str = "auto",
                 connected: bool = True) -> None:
        from mpi4py import MPI

        from decomp.topologies import communicator

        if method not in EXCHANGE_METHODS:
            raise ConfigError(f"exchange method must be one of {EXCHANGE_METHODS}, got {method!r}")
        self._MPI = MPI
        self.method = method
        self.comm = comm
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()
        self.nc = communicator(mixing, comm, connected=connected)  # collective; checks W
        self.mixing = mixing
        self.graph = self.nc.comm
        self.sources: tuple[int, ...] = tuple(int(j) for j in self.nc.sources)
        self.destinations: tuple[int, ...] = tuple(int(j) for j in self.nc.destinations)
        self.weights: dict[int, float] = {int(j): float(w) for j, w in
                                          zip(self.nc.sources, self.nc.weights, strict=True)}
        self.self_weight: float = float(self.nc.self_weight)
        self.bytes = ByteCounter()
        indeg = len(self.sources)
        self._recv = np.empty(0, dtype=np.uint8)  # flat receive buffer, grown on demand
        self._send = np.empty(0, dtype=np.uint8)  # persistent send buffer ("persistent")
        self._in_sizes = np.zeros(indeg, dtype=np.int64)
        self._out_size = np.zeros(1, dtype=np.int64)
        self._displs = np.zeros(indeg, dtype=np.int64)
        self._layout: tuple[int, ...] | None = None  # sizes the cached views were made for
        self._views: dict[int, np.ndarray] = {}
        self._preqs: list[Any] = []  # persistent requests for one payload size
        self._preq_size = -1
        self._size_reqs: list[Any] = []  # persistent requests of the size round
        self._pending: list[Any] | None = None  # requests of the exchange in flight
        self._gather_sizes = np.zeros(self.size, dtype=np.int64)
        self._gather_buf = np.empty(0, dtype=np.uint8)
        self._swap_bufs: dict[int, np.ndarray] = {}  # per peer, grown on demand (swap)

    # ------------------------------------------------------------------ properties
    @property
    def worker(self) -> int:
        """This node's index (= rank): names its shard and random streams."""
        return self.rank

    @property
    def peers(self) -> tuple[int, ...]:
        """The nodes this rank keeps per-edge state for: ``sources`` (W is static)."""
        return self.sources

    def slot(self, j: int) -> int:
        """Index of peer j in :attr:`peers`."""
        return self.sources.index(j)

    def select(self, t: int) -> Neighborhood:
        """W is the same at every step: nothing to do (returns self)."""
        return self

    @property
    def indegree(self) -> int:
        return len(self.sources)

    @property
    def outdegree(self) -> int:
        return len(self.destinations)

    # ------------------------------------------------------------------ neighbour exchange
    def exchange(self, payload: np.ndarray, nbytes: int | None = None) -> dict[int, np.ndarray]:
        """Send ``payload`` to every out-neighbour; return ``{source: its payload}``.

        payload: 1-D contiguous uint8. nbytes: the size every rank's payload has in this call
        (known in advance, e.g. ``compressor.payload_bytes(d, dtype)``); None exchanges the
        sizes first. Collective over the neighbourhood: every rank must call it the same number
        of times with the same ``nbytes`` mode. Returned arrays are views into a persistent
        buffer, valid until the next call. (:meth:`exchange_start` + :meth:`exchange_finish`.)
        """
        self.exchange_start(payload, nbytes)
        return self.exchange_finish()

    def exchange_start(self, payload: np.ndarray, nbytes: int | None = None) -> None:
        """Post the exchange of :meth:`exchange` and return at once (``Ineighbor_allgather``,
        ``Startall`` or ``Isend``/``Irecv``), so computation can run while the messages
        travel; ``payload`` must stay unchanged until :meth:`exchange_finish` (the persistent
        method copies it, the others send from it). Whether the transfer advances before the
        finish depends on the MPI library's progress (docs/design.md, "Overlap")."""
        payload = _as_payload(payload)
        if self._pending is not None:
            raise UsageError("exchange_start: the previous exchange is not finished (call "
                             "exchange_finish first)")
        if nbytes is not None:
            if payload.size != nbytes:
                raise PayloadError(f"payload has {payload.size} bytes but this exchange is fixed "
                                   f"at {nbytes} bytes (compressor payload_bytes mismatch?)")
            sizes: tuple[int, ...] = (nbytes,) * self.indegree
        else:
            sizes = self._exchange_sizes(payload.size)
        self._prepare(sizes)
        method = self.method
        if method == "auto":
            method = ("persistent" if nbytes is not None and nbytes <= AUTO_PERSISTENT_MAX
                      else "neighbor")
        reqs: list[Any] = []
        if self.indegree or self.outdegree:
            if method == "neighbor":
                reqs = [self._neighbor(payload, sizes, fixed=nbytes is not None)]
            elif method == "persistent" and nbytes is not None:
                reqs = self._persistent(payload, nbytes)
            else:
                reqs = self._isend(payload, sizes)
        self._pending = reqs
        self.bytes.up += payload.size * self.outdegree
        self.bytes.down += sum(sizes)

    def exchange_finish(self) -> dict[int, np.ndarray]:
        """Wait for the exchange posted by :meth:`exchange_start`; ``{source: payload}``."""
        reqs, self._pending = self._pending, None
        if reqs is None:
            raise UsageError("exchange_finish without exchange_start (post the exchange first)")
        if reqs:
            self._MPI.Request.Waitall(reqs)
        return self._views

    def swap(self, payloads: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Pairwise exchange (a symmetric W: sources = destinations): send ``payloads[j]`` to
        each neighbour j and receive j's message to this node, which has the same size (the
        two ends of an edge agree on it, e.g. a low-rank factor of the edge); ``{j: payload}``,
        views into per-peer buffers valid until the next call. One Isend/Irecv per edge."""
        MPI = self._MPI
        if self._pending is not None:
            raise UsageError("swap: an exchange is in flight (call exchange_finish first)")
        if self.sources != self.destinations or set(payloads) != set(self.sources):
            raise UsageError(f"swap needs a symmetric W and one payload per neighbour "
                             f"{self.sources}; got payloads for {sorted(payloads)}")
        out: dict[int, np.ndarray] = {}
        reqs = []
        for j in self.sources:
            p = _as_payload(payloads[j])
            buf = self._swap_bufs.get(j)
            if buf is None or buf.size < p.size:
                buf = self._swap_bufs[j] = np.empty(max(p.size, 64), dtype=np.uint8)
            out[j] = buf[:p.size]
            reqs.append(self.graph.Irecv([out[j], MPI.BYTE], source=j, tag=_TAG_SWAP))
            reqs.append(self.graph.Isend([p, MPI.BYTE], dest=j, tag=_TAG_SWAP))
            self.bytes.up += p.size
            self.bytes.down += p.size
        if reqs:
            MPI.Request.Waitall(reqs)
        return out

    def received_rows(self, dtype: Any, d: int) -> np.ndarray:
        """The last exchange's payloads as one (indegree, d) array of ``dtype`` (a view, rows
        in ``sources`` order) — for dense payloads of d values each (D-PSGD's models)."""
        nb = d * np.dtype(dtype).itemsize
        if self._layout != (nb,) * self.indegree:
            raise PayloadError(f"the last exchange did not carry {d} {np.dtype(dtype)} values "
                               "from each source")
        return self._recv[:nb * self.indegree].view(dtype).reshape(self.indegree, d)

    def _exchange_sizes(self, size: int) -> tuple[int, ...]:
        """One int64 per edge: every source's payload size for this call."""
        MPI = self._MPI
        self._out_size[0] = size
        if self.method in ("neighbor", "auto"):
            self.graph.Neighbor_allgather(self._out_size, self._in_sizes)
        else:
            if not self._size_reqs:
                self._size_reqs = (
                    [self.graph.Recv_init(self._in_sizes[k:k + 1], source=s, tag=_TAG_SIZE)
                     for k, s in enumerate(self.sources)]
                    + [self.graph.Send_init(self._out_size, dest=d, tag=_TAG_SIZE)
                       for d in self.destinations])
            MPI.Prequest.Startall(self._size_reqs)
            MPI.Request.Waitall(self._size_reqs)
        self.bytes.control += self._out_size.nbytes * self.outdegree
        return tuple(int(s) for s in self._in_sizes)

    def _prepare(self, sizes: tuple[int, ...]) -> None:
        """Make the receive buffer and the result views fit ``sizes`` (no-op when unchanged)."""
        if sizes == self._layout:
            return
        total = sum(sizes)
        if self._recv.size < total:
            self._recv = np.empty(max(total, 2 * self._recv.size), dtype=np.uint8)
            self._preq_size = -1  # the persistent requests point at the old buffer
        off = 0
        views = {}
        for k, (s, n) in enumerate(zip(self.sources, sizes, strict=True)):
            self._displs[k] = off
            views[s] = self._recv[off:off + n]
            off += n
        self._views = views
        self._layout = sizes

    def _isend(self, payload: np.ndarray, sizes: tuple[int, ...]) -> list[Any]:
        MPI = self._MPI
        reqs = [self.graph.Irecv([self._views[s], sizes[k], MPI.BYTE], source=s,
                                 tag=_TAG_PAYLOAD) for k, s in enumerate(self.sources)]
        reqs += [self.graph.Isend([payload, MPI.BYTE], dest=d, tag=_TAG_PAYLOAD)
                 for d in self.destinations]
        return reqs

    def _persistent(self, payload: np.ndarray, nbytes: int) -> list[Any]:
        MPI = self._MPI
        if self._preq_size != nbytes:
            for r in self._preqs:
                r.Free()
            if self._send.size < nbytes:
                self._send = np.empty(nbytes, dtype=np.uint8)
            self._preqs = (
                [self.graph.Recv_init([self._views[s], nbytes, MPI.BYTE], source=s,
                                      tag=_TAG_PAYLOAD) for s in self.sources]
                + [self.graph.Send_init([self._send, nbytes, MPI.BYTE], dest=d,
                                        tag=_TAG_PAYLOAD) for d in self.destinations])
            self._preq_size = nbytes
        self._send[:nbytes] = payload
        MPI.Prequest.Startall(self._preqs)
        return self._preqs

    def _neighbor(self, payload: np.ndarray, sizes: tuple[int, ...], fixed: bool) -> Any:
        MPI = self._MPI
        total = sum(sizes)
        if fixed:
            return self.graph.Ineighbor_allgather([payload, MPI.BYTE],
                                                  [self._recv[:total], MPI.BYTE])
        return self.graph.Ineighbor_allgatherv(
            [payload, MPI.BYTE], [self._recv, self._in_sizes, self._displs, MPI.BYTE])

    # ------------------------------------------------------------------ whole communicator
    def allreduce_sum(self, vec: np.ndarray) -> None:
        """In-place dense sum over all ranks (the all-reduce SGD baseline).

        Counts the vector's bytes as sent and received by this rank (its contribution and the
        result); MPI's ring / recursive-doubling algorithms move about 2(n−1)/n times that.
        """
        self.comm.Allreduce(self._MPI.IN_PLACE, vec, op=self._MPI.SUM)
        self.bytes.up += vec.nbytes
        self.bytes.down += vec.nbytes

    def allgather(self, payload: np.ndarray, nbytes: int | None = None) -> list[np.ndarray]:
        """Every rank's payload, in rank order (views valid until the next call).

        With ``nbytes`` (same size on every rank) one ``Allgather``; else sizes are gathered
        first (control bytes) and an ``Allgatherv`` follows. Counts this rank's payload once as
        sent (its contribution) and the others' as received.
        """
        MPI = self._MPI
        payload = _as_payload(payload)
        n = self.size
        if nbytes is not None:
            if payload.size != nbytes:
                raise PayloadError(f"payload has {payload.size} bytes but this all-gather is "
                                   f"fixed at {nbytes} bytes")
            self._gather_sizes[:] = nbytes
        else:
            mine = np.array([payload.size], dtype=np.int64)
            self.comm.Allgather(mine, self._gather_sizes)
            self.bytes.control += mine.nbytes
        total = int(self._gather_sizes.sum())
        if self._gather_buf.size < total:
            self._gather_buf = np.empty(max(total, 2 * self._gather_buf.size), dtype=np.uint8)
        displs = np.zeros(n, dtype=np.int64)
        np.cumsum(self._gather_sizes[:-1], out=displs[1:])
        if nbytes is not None:
            self.comm.Allgather([payload, MPI.BYTE], [self._gather_buf[:total], MPI.BYTE])
        else:
            self.comm.Allgatherv([payload, MPI.BYTE],
                                 [self._gather_buf, self._gather_sizes, displs, MPI.BYTE])
        self.bytes.up += payload.size
        self.bytes.down += total - payload.size
        return [self._gather_buf[displs[r]:displs[r] + self._gather_sizes[r]] for r in range(n)]

    def allreduce_uncounted(self, vec: np.ndarray) -> None:
        """In-place sum over all ranks for metrics (off the clock): not counted as traffic."""
        self.comm.Allreduce(self._MPI.IN_PLACE, vec, op=self._MPI.SUM)

    def min_uncounted(self, value: int) -> int:
        """The minimum of an integer over all ranks (the collective divergence flag)."""
        return int(self.comm.allreduce(int(value), op=self._MPI.MIN))

    def close(self) -> None:
        """Free the persistent requests and the dist-graph communicator (collective)."""
        for r in self._preqs + self._size_reqs:
            r.Free()
        self._preqs, self._size_reqs, self._preq_size = [], [], -1
        self.nc.free()
