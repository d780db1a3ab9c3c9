"""Master–worker transport over one communicator.

The master is rank 0. With ``master = "shared"`` (default) rank 0 is also worker 0 and there
are n = size workers; with ``"dedicated"`` rank 0 only aggregates and ranks 1..size−1 are
workers 0..n−1 (n = size − 1). Worker indices, not ranks, name shards and random streams, so
both modes compute the same iterates.

Uplink: :meth:`MasterWorker.gather` (``Gatherv`` of uint8 payloads; with ``nbytes`` — a size
every worker's payload has, e.g. ``C.payload_bytes(d, dtype)`` — the sizes round is skipped),
also split into :meth:`~MasterWorker.gather_start` / :meth:`~MasterWorker.gather_finish`
(``Igatherv``) so a worker can do its own bookkeeping while the gather is in flight. Downlink:
:meth:`~MasterWorker.broadcast` (the dense model, in place) or
:meth:`~MasterWorker.broadcast_bytes` (a variable-size uint8 payload: its size, then the bytes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from decomp.comm.counters import ByteCounter
from decomp.errors import ConfigError, LaunchError, PayloadError

MASTER_MODES = ("shared", "dedicated")


class MasterWorker:
    """Gatherv of variable-size uint8 payloads to the master, Bcast of the model, Allreduce.

    Args:
        comm: an ``mpi4py.MPI.Comm`` (intra-communicator).
        master: ``"shared"`` or ``"dedicated"``.
    """

    def __init__(self, comm: Any, master: str = "shared") -> None:
        from mpi4py import MPI

        if master not in MASTER_MODES:
            raise ConfigError(f"run.master must be one of {MASTER_MODES}, got {master!r}")
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
        self._bsize = np.zeros(1, dtype=np.int64)
        self._down = np.empty(0, dtype=np.uint8)  # broadcast_bytes receive buffer

    def gather(self, payload: np.ndarray | None,
               nbytes: int | None = None) -> list[np.ndarray] | None:
        """Collect every worker's payload at the master, in worker order.

        payload: 1-D uint8 (None on a dedicated master). nbytes: the size of every worker's
        payload in this call, known to all ranks (skips the sizes round); None gathers the
        sizes first (control bytes). Returns, on the master, a list of n uint8 views (valid
        until the next call); None elsewhere.
        """
        self.gather_start(payload, nbytes)
        return self.gather_finish()

    def gather_start(self, payload: np.ndarray | None, nbytes: int | None = None) -> None:
        """Post the gather of :meth:`gather` (``Igatherv``) and return at once; the payload
        must stay unchanged until :meth:`gather_finish`."""
        MPI = self._MPI
        if self._req is not None:
            raise RuntimeError("gather_start: the previous gather is not finished")
        send = self._empty if payload is None else payload
        if send.dtype != np.uint8 or send.ndim != 1:
            raise TypeError("payloads are 1-D uint8 arrays")
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
        self.bytes.up += send.size
        if not self.is_master:
            self._req = self.comm.Igatherv(send, None, root=0)
            return
        self._make_views(tuple(int(v) for v in self._sizes))
        self._req = self.comm.Igatherv(
            send, [self._recv, self._sizes, self._displs, MPI.BYTE], root=0)

    def _make_views(self, sizes: tuple[int, ...]) -> None:
        if sizes == self._layout:
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
            raise RuntimeError("gather_finish without gather_start")
        req.Wait()
        return self._views if self.is_master else None

    def broadcast_bytes(self, payload: np.ndarray | None) -> np.ndarray:
        """The master's uint8 ``payload`` on every rank (None elsewhere): its size (one int64,
        control bytes), then the bytes (counted as ``down`` on every receiving rank). Returns
        the payload on the master, a view of a persistent buffer elsewhere (valid until the
        next call)."""
        if self.is_master:
            assert payload is not None and payload.dtype == np.uint8 and payload.ndim == 1
            self._bsize[0] = payload.size
        self.comm.Bcast(self._bsize, root=0)
        size = int(self._bsize[0])
        if self.is_master:
            buf = payload
        else:
            if self._down.size < size:
                self._down = np.empty(max(size, 2 * self._down.size), dtype=np.uint8)
            buf = self._down[:size]
            self.bytes.control += self._bsize.nbytes
            self.bytes.down += size
        self.comm.Bcast(buf, root=0)
        return buf

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

    def allreduce_uncounted(self, vec: np.ndarray) -> None:
        """In-place sum for metrics (evaluation off the clock): not counted as traffic."""
        self.comm.Allreduce(self._MPI.IN_PLACE, vec, op=self._MPI.SUM)
