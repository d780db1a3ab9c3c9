"""Master–worker transport over one communicator.

The master is rank 0. With ``master = "shared"`` (default) rank 0 is also worker 0 and there
are n = size workers; with ``"dedicated"`` rank 0 only aggregates and ranks 1..size−1 are
workers 0..n−1 (n = size − 1). Worker indices, not ranks, name shards and random streams, so
both modes compute the same iterates.

Uplink: :meth:`MasterWorker.gather` (``Gatherv`` of uint8 payloads; with ``nbytes`` — a size
every worker's payload has, e.g. ``C.payload_bytes(d, dtype)`` — the sizes round is skipped),
also split into :meth:`~MasterWorker.gather_start` / :meth:`~MasterWorker.gather_finish`
(``Igatherv``) so a worker can do its own bookkeeping while the gather is in flight;
:meth:`~MasterWorker.gather_subset` (zero counts for the workers that sit a step out, as in
EF21-PP) or :meth:`~MasterWorker.gather_subset_group` (a sub-communicator of the participants).
Downlink:
:meth:`~MasterWorker.broadcast` (the dense model, in place) or
:meth:`~MasterWorker.broadcast_bytes` (a variable-size uint8 payload: its size and head in one
chunk sized from the previous call, the rest — if any — in a second ``Bcast``).
Tree aggregation (``aggregation = "tree"``): :meth:`~MasterWorker.tree_sum` runs this rank's
rounds of :mod:`decomp.comm.tree` — a fixed-order sparse reduce-scatter (recursive halving) and
all-gather (recursive doubling), node-aware when the ranks span several nodes (``Isend`` /
``Iprobe`` + ``Recv`` of uint8 buffers) — and every rank ends with the total.

A rank waiting for a tree message does not sit in MPI's blocking wait: MPICH busy-polls
there (a rank blocked 2 s in ``Recv`` on the emulated cluster: 1,376 involuntary context
switches, 12 voluntary), and with more ranks than cores the waiting ranks take the cores from
the ones that have a range to merge — each of the tree's 2·log2 n rounds then waits for its
slowest rank to be scheduled (docs/networks.md, "8 hosts"). It tests (``Iprobe`` /
``Testall``, which also advance its sends) :data:`WAIT_SPINS` times, then sleeps
:func:`wait_sleep_s` between tests; ``DECOMP_TREE_WAIT_US=0`` restores MPI's blocking wait.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from decomp.comm.counters import ByteCounter
from decomp.comm.nodes import from_mpi
from decomp.comm.tree import check_aggregation, resolve_aggregation, run_rounds, schedule
from decomp.errors import ConfigError, LaunchError, PayloadError, UsageError

MASTER_MODES = ("shared", "dedicated")
#: largest first chunk of :meth:`MasterWorker.broadcast_bytes` (the rest follows in a 2nd Bcast)
FIRST_MAX = 2 << 20
#: communicators :meth:`MasterWorker.gather_subset_group` keeps (one per distinct subset)
GROUP_CACHE = 64
#: the message tag of the tree aggregation's point-to-point sends
TREE_TAG = 0x7E5
#: tests a tree rank makes before it sleeps between tests (module doc)
WAIT_SPINS = 64
#: the environment variable of the sleep between tests, microseconds (0: MPI's blocking wait)
WAIT_ENV = "DECOMP_TREE_WAIT_US"
#: its default: 200 µs, a few percent of a tree round's link time at 100 Mbit/s (≥ 2.9 ms for
#: EF21 Top-1 % of the MNIST-1D MLP), ≤ 1.6 ms added per step at 10 Gbit/s in the worst case
WAIT_SLEEP_US = 200


def wait_sleep_s() -> float:
    """Seconds a tree rank sleeps between tests (:data:`WAIT_ENV`, default
    :data:`WAIT_SLEEP_US`); 0.0: it waits in MPI's blocking calls instead."""
    text = os.environ.get(WAIT_ENV)
    if text is None:
        return WAIT_SLEEP_US / 1e6
    try:
        us = float(text)
    except ValueError:
        us = -1.0
    if not 0 <= us <= 1e6:
        raise ConfigError(f"{WAIT_ENV}={text!r}: give the microseconds a waiting tree rank "
                          "sleeps between tests, 0 to 1000000 (0: MPI's blocking wait; unset: "
                          f"{WAIT_SLEEP_US})")
    return us / 1e6


def wait_quietly(test: Any, reqs: list[Any], MPI: Any, sleep_s: float) -> None:
    """Until ``test()`` is true: test, and after :data:`WAIT_SPINS` tests sleep ``sleep_s``
    between tests; every test also advances ``reqs`` (this rank's sends of the round)."""
    spins = 0
    while not test():
        if reqs:
            MPI.Request.Testall(reqs)
        spins += 1
        if spins >= WAIT_SPINS:
            time.sleep(sleep_s)


def _check_payload(payload: np.ndarray) -> None:
    """A :class:`PayloadError` unless ``payload`` is a 1-D uint8 array."""
    if not isinstance(payload, np.ndarray) or payload.dtype != np.uint8 or payload.ndim != 1:
        got = (f"{payload.dtype} array of shape {payload.shape}"
               if isinstance(payload, np.ndarray) else type(payload).__name__)
        raise PayloadError(f"payloads are 1-D uint8 arrays (a compressor's encode output), "
                           f"got a {got}")


def check_tree_master(master: str, aggregation: Any) -> str:
    """The aggregation, checked: one of :data:`decomp.comm.tree.AGGREGATIONS`, and "tree"
    only with a shared master (a dedicated master is a rank that only aggregates)."""
    return resolve_aggregation(master, check_aggregation(aggregation))


class MasterWorker:
    """Gatherv of variable-size uint8 payloads to the master, Bcast of the model, Allreduce.

    Args:
        comm: an ``mpi4py.MPI.Comm`` (intra-communicator).
        master: ``"shared"`` or ``"dedicated"``.
        aggregation: ``"gather"`` (payloads gathered at rank 0), ``"tree"`` (summed over
            the fixed-order reduce-scatter + all-gather of :meth:`tree_sum`; needs
            ``master = "shared"``) or ``"auto"`` (the tree when the ranks span more than one
            node, :mod:`decomp.comm.nodes`; the resolved one is :attr:`aggregation`).

    Implements :class:`~decomp.comm.protocols.MasterWorkerTransport`.
    """

    def __init__(self, comm: Any, master: str = "shared", aggregation: str = "gather") -> None:
        from mpi4py import MPI

        if master not in MASTER_MODES:
            raise ConfigError(f"run.master must be one of {MASTER_MODES}, got {master!r}")
        self.aggregation = check_tree_master(master, aggregation)
        self._nodes, count = (from_mpi(comm) if self.aggregation != "gather"
                              else (None, 1))
        self.aggregation = resolve_aggregation(master, self.aggregation, count)
        self._MPI = MPI
        self.comm = comm
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()
        self.mode = master
        if master == "dedicated" and self.size < 2:
            raise LaunchError("master = 'dedicated' needs at least 2 MPI ranks (1 master + "
                              f"workers); this job has {self.size}")
        self.n_workers: int = self.size if master == "shared" else self.size - 1
        self.is_master: bool = self.rank == 0
        self.is_worker: bool = master == "shared" or self.rank != 0
        self.worker: int | None = (
            self.rank if master == "shared" else (self.rank - 1 if self.rank else None))
        self.bytes = ByteCounter()
        self._sizes = np.zeros(self.size, dtype=np.int64)
        self._displs = np.zeros(self.size, dtype=np.int64)
        self._mine = np.zeros(1, dtype=np.int64)
        self._layout: tuple[int, ...] = ()  # sizes the cached views were made for
        self._views: list[np.ndarray] = []
        self._fixed = -1  # nbytes the sizes/displs hold for the fixed-size path
        self._req: Any = None  # the gather in flight
        self._recv = np.empty(0, dtype=np.uint8)  # master's receive buffer, grown on demand
        self._empty = np.empty(0, dtype=np.uint8)
        self._first = 64  # bytes of broadcast_bytes' first Bcast (every rank agrees)
        self._bfirst = np.empty(0, dtype=np.uint8)
        self._down = np.empty(0, dtype=np.uint8)  # broadcast_bytes receive buffer
        self._groups: dict[bytes, Any] = {}  # participant subset -> its communicator
        self._status = MPI.Status()
        self._sleep = wait_sleep_s() if self.aggregation == "tree" else 0.0

    def gather(self, payload: np.ndarray | None,
               nbytes: int | None = None) -> list[np.ndarray] | None:
        """Collect every worker's payload at the master, in worker order.

        payload: 1-D uint8 (None on a dedicated master). nbytes: the size of every worker's
        payload in this call, known to all ranks (skips the sizes round); None gathers the
        sizes first (control bytes). Returns, on the master, a list of n uint8 views (valid
        until the next call); None elsewhere.
        """
        send = self._prepare_gather(payload, nbytes)
        if not self.is_master:
            self.comm.Gatherv(send, None, root=0)
            return None
        self.comm.Gatherv(send, [self._recv, self._sizes, self._displs, self._MPI.BYTE], root=0)
        return self._views

    def gather_subset(self, payload: np.ndarray | None, nbytes: int,
                      participants: np.ndarray) -> list[np.ndarray] | None:
        """The uplink of a partial-participation step: one ``Gatherv`` on the whole
        communicator in which only the participating workers send (``nbytes`` each), the
        others send zero bytes (zero counts, so no byte of theirs crosses MPI).

        participants: (n,) bool, worker i takes part; the same on every rank (a pure function
        of seed and step, so no sizes round). payload: this worker's ``nbytes`` uint8 if it
        takes part, else None (None on a dedicated master too). Returns, on the master, the
        participants' payloads in worker order (views valid until the next gather); None
        elsewhere.
        """
        send = self._empty if payload is None else payload
        _check_payload(send)
        mine = bool(self.is_worker and participants[self.worker])
        if send.size != (nbytes if mine else 0):
            raise PayloadError(f"payload has {send.size} bytes; this worker "
                               f"{'takes' if mine else 'does not take'} part in a gather "
                               f"of {nbytes} bytes per participant")
        first = 0 if self.mode == "shared" else 1
        self._sizes[:first] = 0
        np.multiply(participants, nbytes, out=self._sizes[first:], casting="unsafe")
        self._fixed = -1  # the fixed-size layout of gather() is redone on its next call
        self.bytes.up += send.size
        if not self.is_master:
            self.comm.Gatherv(send, None, root=0)
            return None
        self._make_views(tuple(int(v) for v in self._sizes))
        self.comm.Gatherv(send, [self._recv, self._sizes, self._displs, self._MPI.BYTE], root=0)
        return [self._views[i] for i in np.flatnonzero(participants)]

    def gather_subset_group(self, payload: np.ndarray | None, nbytes: int,
                            participants: np.ndarray) -> list[np.ndarray] | None:
        """:meth:`gather_subset` over a sub-communicator of the master and the participants
        (``MPI_Comm_create_group``, collective over those ranks only): the other ranks make
        no MPI call at all. Every rank sees the same sequence of subsets, so all agree which
        ones to keep: the first :data:`GROUP_CACHE` distinct subsets keep their communicator,
        any later one is created and freed within the step."""
        send = self._empty if payload is None else payload
        mine = bool(self.is_worker and participants[self.worker])
        if send.size != (nbytes if mine else 0):
            raise PayloadError(f"payload has {send.size} bytes, expected "
                               f"{nbytes if mine else 0}")
        key = participants.tobytes()
        keep = key in self._groups or len(self._groups) < GROUP_CACHE
        if not (self.is_master or mine):
            if keep and key not in self._groups:
                self._groups[key] = None  # seen: counts towards the cache on every rank
            return None
        comm = self._groups.get(key)
        if comm is None:
            shift = 0 if self.mode == "shared" else 1
            ranks = sorted({0, *(int(i) + shift for i in np.flatnonzero(participants))})
            world = self.comm.Get_group()
            group = world.Incl(ranks)
            comm = self.comm.Create_group(group)
            group.Free()
            world.Free()
            if keep:
                self._groups[key] = comm
        sub_size = comm.Get_size()
        sizes = np.full(sub_size, nbytes, dtype=np.int64)
        if self.mode == "dedicated" or not participants[0]:
            sizes[0] = 0  # the master's own slot: it sends only as worker 0 of a shared run
        self.bytes.up += send.size
        out = None
        if self.is_master:
            displs = np.zeros(sub_size, dtype=np.int64)
            np.cumsum(sizes[:-1], out=displs[1:])
            total = int(sizes.sum())
            if self._recv.size < total:
                self._recv = np.empty(max(total, 2 * self._recv.size), dtype=np.uint8)
            comm.Gatherv(send, [self._recv, sizes, displs, self._MPI.BYTE], root=0)
            out = [self._recv[a:a + s] for a, s in zip(displs, sizes, strict=True) if s]
            self._layout = ()  # the receive buffer was reused: gather() re-lays its views
            self._views = []
            self._fixed = -1
        else:
            comm.Gatherv(send, None, root=0)
        if not keep:
            comm.Free()
        return out

    def gather_start(self, payload: np.ndarray | None, nbytes: int | None = None) -> None:
        """Post the gather of :meth:`gather` (``Igatherv``) and return at once; the payload
        must stay unchanged until :meth:`gather_finish`. (A nonblocking collective advances
        only inside MPI calls here and costs more than the blocking one on oversubscribed
        cores: the algorithms call :meth:`gather` and do their own bookkeeping after it,
        while the master aggregates.)"""
        if self._req is not None:
            raise UsageError("gather_start: the previous gather is not finished (call "
                             "gather_finish first)")
        send = self._prepare_gather(payload, nbytes)
        if not self.is_master:
            self._req = self.comm.Igatherv(send, None, root=0)
            return
        self._req = self.comm.Igatherv(
            send, [self._recv, self._sizes, self._displs, self._MPI.BYTE], root=0)

    def _prepare_gather(self, payload: np.ndarray | None, nbytes: int | None) -> np.ndarray:
        """Check the payload, settle the sizes (a Gather of them unless ``nbytes``), count
        the bytes and (master) lay out the receive views; returns the send buffer."""
        send = self._empty if payload is None else payload
        _check_payload(send)
        if nbytes is None:
            self._mine[0] = send.size
            self.comm.Gather(self._mine, self._sizes if self.is_master else None, root=0)
            self.bytes.control += self._mine.nbytes
            self._fixed = -1
        else:
            if send.size != (nbytes if payload is not None else 0):
                raise PayloadError(f"payload has {send.size} bytes but this gather is fixed at "
                                   f"{nbytes} bytes (compressor payload_bytes mismatch?)")
            if self._fixed != nbytes:
                self._sizes[:] = nbytes
                if self.mode == "dedicated":
                    self._sizes[0] = 0
                self._fixed = nbytes
                self._views = []  # re-laid out below
        self.bytes.up += send.size
        if self.is_master and (self._fixed < 0 or not self._views):
            self._make_views(tuple(int(v) for v in self._sizes))
        return send

    def _make_views(self, sizes: tuple[int, ...]) -> None:
        if sizes == self._layout and self._views:
            return
        np.cumsum(self._sizes[:-1], out=self._displs[1:])
        total = sum(sizes)
        if self._recv.size < total:
            self._recv = np.empty(max(total, 2 * self._recv.size), dtype=np.uint8)
        first = 0 if self.mode == "shared" else 1
        self._views = [self._recv[self._displs[r]:self._displs[r] + sizes[r]]
                       for r in range(first, self.size)]
        self._layout = sizes

    def gather_finish(self) -> list[np.ndarray] | None:
        """Complete the gather posted by :meth:`gather_start`: the master's views, else None."""
        req, self._req = self._req, None
        if req is None:
            raise UsageError("gather_finish without gather_start (post the gather first)")
        req.Wait()
        return self._views if self.is_master else None

    def broadcast_bytes(self, payload: np.ndarray | None) -> np.ndarray:
        """The master's uint8 ``payload`` on every rank (None elsewhere). Returns the payload
        on the master, a view of a persistent buffer elsewhere (valid until the next call).

        Receivers do not know the size in advance, so the first ``Bcast`` carries an int64
        size and the payload's head in a chunk whose length every rank derives from the
        previous call's size (+1/16, 64 B to :data:`FIRST_MAX`); only a payload longer than
        that needs a second ``Bcast`` of the rest. So a downlink of steady size costs one
        broadcast, not a size round plus one. Counts ``down`` = payload bytes received and
        ``control`` = the size and the chunk's padding, on every receiving rank.
        """
        first = self._first
        if self.is_master:
            if payload is None:
                raise UsageError("broadcast_bytes: the master must pass the payload")
            _check_payload(payload)
            if self._bfirst.size < first:
                self._bfirst = np.empty(FIRST_MAX, dtype=np.uint8)
            chunk = self._bfirst[:first]
            n0 = min(payload.size, first - 8)
            chunk[:8].view(np.int64)[0] = payload.size
            chunk[8:8 + n0] = payload[:n0]  # one copy of at most FIRST_MAX bytes
            self.comm.Bcast(chunk, root=0)
            size = payload.size
            if size > n0:
                self.comm.Bcast(payload[n0:], root=0)
            buf = payload
        else:  # receive straight into [size | payload]: the payload is a view, no copy
            if self._down.size < first:
                self._down = np.empty(max(first, 2 * self._down.size), dtype=np.uint8)
            self.comm.Bcast(self._down[:first], root=0)
            size = int(self._down[:8].view(np.int64)[0])
            n0 = min(size, first - 8)
            if self._down.size < 8 + size:
                grown = np.empty(max(8 + size, 2 * self._down.size), dtype=np.uint8)
                grown[:first] = self._down[:first]
                self._down = grown
            if size > n0:
                self.comm.Bcast(self._down[first:8 + size], root=0)
            buf = self._down[8:8 + size]
            self.bytes.down += size
            self.bytes.control += first - n0
        self._first = min(FIRST_MAX, max(64, (size + size // 16 + 8 + 63) & ~63))
        return buf

    def tree_sum(self, state: Any) -> np.ndarray:
        """The sum of every rank's sum on every rank (``aggregation = "tree"``).

        state: this rank's :class:`decomp.compress.merge.RangeSum`, started with its own
        payload; it runs its rounds of :func:`decomp.comm.tree.schedule` for this world and
        node layout (:mod:`decomp.comm.nodes`): per round ``Isend`` of its ranges, then
        ``Probe`` + ``Recv`` of each incoming range in order (variable sizes). Counts ``up``
        = the bytes it sends while reducing, ``down`` = the bytes of the total's ranges it
        receives. Returns the total as a downlink sum message."""
        rows = schedule(self.size, state.d, self._nodes)
        up, down = run_rounds(rows[self.rank], state, self._exchange)
        self.bytes.up += up
        self.bytes.down += down
        return state.total()

    def _exchange(self, rd: Any, out: list[np.ndarray]) -> list[np.ndarray]:
        """One round's point-to-point messages (:func:`decomp.comm.tree.run_rounds`), waited
        for without spinning unless ``DECOMP_TREE_WAIT_US=0`` (module doc)."""
        MPI, comm, status, sleep = self._MPI, self.comm, self._status, self._sleep
        reqs = [comm.Isend([m, MPI.BYTE], dest=peer, tag=TREE_TAG)
                for (peer, _, _), m in zip(rd.sends, out, strict=True)]
        got = []
        for peer, _, _ in rd.recvs:
            if sleep:
                wait_quietly(lambda p=peer: comm.Iprobe(source=p, tag=TREE_TAG, status=status),
                             reqs, MPI, sleep)
            else:
                comm.Probe(source=peer, tag=TREE_TAG, status=status)
            buf = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
            comm.Recv([buf, MPI.BYTE], source=peer, tag=TREE_TAG)
            got.append(buf)
        if sleep and reqs:
            wait_quietly(lambda: MPI.Request.Testall(reqs), [], MPI, sleep)
        MPI.Request.Waitall(reqs)
        return got

    def broadcast(self, x: np.ndarray) -> None:
        """Bcast the master's x (in place) to every rank; counts bytes received downlink."""
        self.comm.Bcast(x, root=0)
        if not self.is_master:
            self.bytes.down += x.nbytes

    def allreduce_sum(self, vec: np.ndarray) -> None:
        """In-place dense sum over all ranks (a dedicated master contributes zeros).

        Counts the vector's bytes as sent by each worker (what the rank contributes) and as
        received by every rank (the result); MPI's ring/recursive-doubling algorithm moves
        about 2(n−1)/n times that.
        """
        self.comm.Allreduce(self._MPI.IN_PLACE, vec, op=self._MPI.SUM)
        if self.is_worker:
            self.bytes.up += vec.nbytes
        self.bytes.down += vec.nbytes

    def allreduce_chunks(self, words: np.ndarray, combine: Any) -> None:
        """An all-reduce of uint16 ``words`` (d,) with a user combine, in place: an Alltoall
        hands rank r the r-th of ``size`` equal chunks (zero padded) of every rank's words,
        ``combine(rows)`` ((size, chunk) uint16, rows in rank order -> (chunk,) uint16)
        reduces them, and an Allgather brings every chunk back to every rank (a 16-bit float
        sum: MPI has no such op). Counted as :meth:`allreduce_sum`: the words' bytes sent by
        a worker, received by every rank."""
        MPI, n, d = self._MPI, self.size, words.size
        c = -(-d // n)
        send = np.zeros((n, c), dtype=np.uint16)
        send.reshape(-1)[:d] = words
        rows = np.empty((n, c), dtype=np.uint16)
        self.comm.Alltoall([send, MPI.UINT16_T], [rows, MPI.UINT16_T])
        mine = np.ascontiguousarray(combine(rows), dtype=np.uint16)
        self.comm.Allgather([mine, MPI.UINT16_T], [send, MPI.UINT16_T])
        words[:] = send.reshape(-1)[:d]
        if self.is_worker:
            self.bytes.up += words.nbytes
        self.bytes.down += words.nbytes

    def allreduce_uncounted(self, vec: np.ndarray) -> None:
        """In-place sum for metrics (evaluation off the clock): not counted as traffic."""
        self.comm.Allreduce(self._MPI.IN_PLACE, vec, op=self._MPI.SUM)

