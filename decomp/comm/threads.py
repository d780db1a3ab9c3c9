"""In-memory transports: n ranks as threads of one process (no MPI).

For debugging and notebooks, and as the **executable specification** of the two transport
protocols (:mod:`decomp.comm.protocols`): every registered algorithm runs on these in the
unit tests and gives the iterates of its :mod:`decomp.sim` reference. A :class:`Board` is
what the ranks of one run share (a slot per rank and a barrier); each rank's thread holds its
own transport object::

    board = Board(n)
    def rank(i):
        env = Env(ThreadNeighborhood(W, i, board), problems[i], n, seed, lr)
        state = alg.init(env, x0)
        for _ in range(steps):
            state = alg.step(env, state)
        return state.x
    xs = run_ranks(board, rank)          # [x_0, ..., x_{n-1}]

Every collective is a :meth:`Board.publish` (two barrier waits), so the calls must be made in
the same order on every rank, as with MPI. Received payloads are copies (valid until the next
call, as the protocol promises, and longer). Byte counts follow the MPI transports' rules for
payload bytes (``up`` / ``down``); control bytes are not modelled. Nothing here is fast: it is
for correctness, not for timing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from decomp.comm.counters import ByteCounter
from decomp.comm.masterworker import MASTER_MODES, check_tree_master
from decomp.comm.neighborhood import _as_payload
from decomp.comm.nodes import count_env, from_env
from decomp.comm.tree import resolve_aggregation, run_rounds, schedule
from decomp.errors import ConfigError, LaunchError, PayloadError, UsageError

__all__ = ["Board", "ThreadMasterWorker", "ThreadNeighborhood", "run_ranks"]

T = TypeVar("T")


class Board:
    """What the ``n`` ranks of one in-memory run share: one slot per rank and a barrier
    (``timeout`` seconds: a rank that never arrives fails the others instead of hanging)."""

    def __init__(self, n: int, timeout: float = 60.0) -> None:
        if n < 1:
            raise ConfigError(f"a board needs at least one rank, got n = {n}")
        self.n = n
        self.slots: list[Any] = [None] * n
        self.barrier = threading.Barrier(n, timeout=timeout)

    def publish(self, rank: int, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, once all have published (collective)."""
        self.slots[rank] = value
        self.barrier.wait()
        got = list(self.slots)
        self.barrier.wait()  # nobody overwrites a slot before all have read
        return got

    def abort(self) -> None:
        """Break the barrier: every rank waiting in a collective raises."""
        self.barrier.abort()


def run_ranks(board: Board, fn: Callable[[int], T], timeout: float = 600.0) -> list[T]:
    """``[fn(0), ..., fn(n − 1)]``, each in its own thread; if one raises, the board is
    aborted (so no rank hangs) and the first error is raised."""
    with ThreadPoolExecutor(board.n) as pool:
        futs = [pool.submit(fn, i) for i in range(board.n)]
        try:
            return [f.result(timeout=timeout) for f in futs]
        except BaseException:
            board.abort()
            raise


def _dense(W: Any) -> np.ndarray:
    """W as an (n, n) float array (a MixingMatrix or an array)."""
    return np.asarray(W.dense() if hasattr(W, "dense") else W, dtype=np.float64)


def sum_in_rank_order(board: Board, rank: int, vec: np.ndarray) -> None:
    """vec ← Σ_r vec_r over the ranks on ``board``, added in rank order (in place; every rank
    gets the same bits)."""
    got = board.publish(rank, vec.copy())
    acc = got[0].copy()
    for v in got[1:]:  # rank order
        acc += v
    vec[:] = acc


class ThreadNeighborhood:
    """Node ``rank`` of W (or of a schedule W_t: anything with ``period`` and ``W(k)``) on a
    :class:`Board`: the :class:`~decomp.comm.protocols.NeighborTransport` protocol in memory.

    sources: j != i with W_ij > 0 (ascending); destinations: j != i with W_ji > 0; weights:
    {j: W_ij} (Python floats); self_weight: W_ii; all of the current W_t after ``select(t)``.
    """

    def __init__(self, mixing: Any, rank: int, board: Board) -> None:
        from decomp.topologies import is_schedule

        self.rank, self.size, self.board = rank, board.n, board
        self.time_varying = bool(is_schedule(mixing))
        self.mixing = mixing
        mats = ([_dense(mixing(k)) for k in range(int(mixing.period))] if self.time_varying
                else [_dense(mixing)])
        if any(M.shape != (self.size, self.size) for M in mats):
            raise LaunchError(f"W is {mats[0].shape[0]}x{mats[0].shape[1]} but the board has "
                              f"{self.size} ranks")
        self._mats = mats
        self.bytes = ByteCounter()
        self._pending: dict[int, np.ndarray] | None = None
        self._got: dict[int, np.ndarray] = {}
        self.peers: tuple[int, ...] = tuple(sorted(
            {j for M in mats for j in range(self.size)
             if j != rank and (M[rank, j] > 0 or M[j, rank] > 0)}))
        self._slots = {j: k for k, j in enumerate(self.peers)}
        self.select(0)
        if not self.time_varying:
            self.peers = self.sources

    # ------------------------------------------------------------------ the step's W_t
    def select(self, t: int) -> ThreadNeighborhood:
        """Make W_t (``t mod period``) current (a static W: always W); returns self."""
        if self._pending is not None:
            raise UsageError("select: an exchange of the previous W_t is not finished "
                             "(call exchange_finish first)")
        M = self._mats[int(t) % len(self._mats)]
        i = self.rank
        self.sources = tuple(j for j in range(self.size) if j != i and M[i, j] > 0)
        self.destinations = tuple(j for j in range(self.size) if j != i and M[j, i] > 0)
        self.weights = {j: float(M[i, j]) for j in self.sources}
        self.self_weight = float(M[i, i])
        return self

    def slot(self, j: int) -> int:
        """Index of peer j in :attr:`peers`."""
        return self._slots[j] if self.time_varying else self.sources.index(j)

    @property
    def worker(self) -> int:
        return self.rank

    @property
    def indegree(self) -> int:
        return len(self.sources)

    @property
    def outdegree(self) -> int:
        return len(self.destinations)

    # ------------------------------------------------------------------ neighbour exchange
    def exchange(self, payload: np.ndarray, nbytes: int | None = None) -> dict[int, np.ndarray]:
        self.exchange_start(payload, nbytes)
        return self.exchange_finish()

    def exchange_start(self, payload: np.ndarray, nbytes: int | None = None) -> None:
        payload = _as_payload(payload)
        if self._pending is not None:
            raise UsageError("exchange_start: the previous exchange is not finished (call "
                             "exchange_finish first)")
        if nbytes is not None and payload.size != nbytes:
            raise PayloadError(f"payload has {payload.size} bytes but this exchange is fixed "
                               f"at {nbytes} bytes (compressor payload_bytes mismatch?)")
        got = self.board.publish(self.rank, payload.copy())
        self._pending = {j: got[j] for j in self.sources}
        self.bytes.up += payload.size * self.outdegree
        self.bytes.down += sum(v.size for v in self._pending.values())

    def exchange_finish(self) -> dict[int, np.ndarray]:
        got, self._pending = self._pending, None
        if got is None:
            raise UsageError("exchange_finish without exchange_start (post the exchange first)")
        self._got = got
        return got

    def swap(self, payloads: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        if self._pending is not None:
            raise UsageError("swap: an exchange is in flight (call exchange_finish first)")
        if self.sources != self.destinations or set(payloads) != set(self.sources):
            raise UsageError(f"swap needs a symmetric W and one payload per neighbour "
                             f"{self.sources}; got payloads for {sorted(payloads)}")
        mine = {j: _as_payload(p).copy() for j, p in payloads.items()}
        got = self.board.publish(self.rank, mine)
        out = {j: got[j][self.rank] for j in self.sources}
        for j in self.sources:
            if out[j].size != mine[j].size:
                raise PayloadError(f"swap: node {j} sent {out[j].size} bytes to node "
                                   f"{self.rank}, which sent it {mine[j].size}")
            self.bytes.up += mine[j].size
            self.bytes.down += out[j].size
        return out

    def received_rows(self, dtype: Any, d: int) -> np.ndarray:
        nb = d * np.dtype(dtype).itemsize
        if any(self._got.get(j, np.empty(0)).size != nb for j in self.sources):
            raise PayloadError(f"the last exchange did not carry {d} {np.dtype(dtype)} values "
                               "from each source")
        if not self.sources:
            return np.empty((0, d), dtype=dtype)
        return np.stack([self._got[j].view(dtype) for j in self.sources])

    # ------------------------------------------------------------------ whole communicator
    def allgather(self, payload: np.ndarray, nbytes: int | None = None) -> list[np.ndarray]:
        payload = _as_payload(payload)
        if nbytes is not None and payload.size != nbytes:
            raise PayloadError(f"payload has {payload.size} bytes but this all-gather is "
                               f"fixed at {nbytes} bytes")
        got = self.board.publish(self.rank, payload.copy())
        self.bytes.up += payload.size
        self.bytes.down += sum(v.size for v in got) - payload.size
        return got

    def allreduce_sum(self, vec: np.ndarray) -> None:
        self.allreduce_uncounted(vec)
        self.bytes.up += vec.nbytes
        self.bytes.down += vec.nbytes

    def allreduce_uncounted(self, vec: np.ndarray) -> None:
        sum_in_rank_order(self.board, self.rank, vec)

    def min_uncounted(self, value: int) -> int:
        return int(min(self.board.publish(self.rank, int(value))))

    def close(self) -> None:
        """Nothing to free."""


class ThreadMasterWorker:
    """Rank ``rank`` of a master–worker run on a :class:`Board`: the
    :class:`~decomp.comm.protocols.MasterWorkerTransport` protocol in memory. Rank 0 is the
    master; ``master = "shared"`` (rank 0 also worker 0, n = size) or ``"dedicated"``
    (workers are ranks 1.., n = size − 1); ``aggregation`` "gather" or "tree" (shared only)."""

    def __init__(self, rank: int, board: Board, master: str = "shared",
                 aggregation: str = "gather") -> None:
        if master not in MASTER_MODES:
            raise ConfigError(f"master must be one of {MASTER_MODES}, got {master!r}")
        self.aggregation = resolve_aggregation(master, check_tree_master(master, aggregation),
                                               count_env(board.n))
        self.rank, self.size, self.board, self.mode = rank, board.n, board, master
        if master == "dedicated" and self.size < 2:
            raise LaunchError("master = 'dedicated' needs at least 2 ranks (1 master + workers)")
        self.n_workers = self.size if master == "shared" else self.size - 1
        self.is_master = rank == 0
        self.is_worker = master == "shared" or rank != 0
        self.worker: int | None = rank if master == "shared" else (rank - 1 if rank else None)
        self.bytes = ByteCounter()
        self._pending: list[np.ndarray] | None | bool = False

    def _send(self, payload: np.ndarray | None, nbytes: int | None) -> np.ndarray:
        send = np.empty(0, dtype=np.uint8) if payload is None else _as_payload(payload)
        if nbytes is not None and send.size != (nbytes if payload is not None else 0):
            raise PayloadError(f"payload has {send.size} bytes but this gather is fixed at "
                               f"{nbytes} bytes (compressor payload_bytes mismatch?)")
        self.bytes.up += send.size
        return send

    def _workers(self, got: list[Any]) -> list[Any]:
        return got if self.mode == "shared" else got[1:]

    def gather(self, payload: np.ndarray | None,
               nbytes: int | None = None) -> list[np.ndarray] | None:
        got = self.board.publish(self.rank, self._send(payload, nbytes).copy())
        return self._workers(got) if self.is_master else None

    def gather_start(self, payload: np.ndarray | None, nbytes: int | None = None) -> None:
        if self._pending is not False:
            raise UsageError("gather_start: the previous gather is not finished (call "
                             "gather_finish first)")
        self._pending = self.gather(payload, nbytes)

    def gather_finish(self) -> list[np.ndarray] | None:
        got, self._pending = self._pending, False
        if got is False:
            raise UsageError("gather_finish without gather_start (post the gather first)")
        return got  # type: ignore[return-value]

    def gather_subset(self, payload: np.ndarray | None, nbytes: int,
                      participants: np.ndarray) -> list[np.ndarray] | None:
        mine = bool(self.is_worker and participants[self.worker])
        send = np.empty(0, dtype=np.uint8) if payload is None else _as_payload(payload)
        if send.size != (nbytes if mine else 0):
            raise PayloadError(f"payload has {send.size} bytes; this worker "
                               f"{'takes' if mine else 'does not take'} part in a gather "
                               f"of {nbytes} bytes per participant")
        self.bytes.up += send.size
        got = self._workers(self.board.publish(self.rank, send.copy()))
        if not self.is_master:
            return None
        return [got[i] for i in np.flatnonzero(participants)]

    gather_subset_group = gather_subset

    def broadcast(self, x: np.ndarray) -> None:
        got = self.board.publish(self.rank, x.copy() if self.is_master else None)
        if not self.is_master:
            x[:] = got[0]
            self.bytes.down += x.nbytes

    def broadcast_bytes(self, payload: np.ndarray | None) -> np.ndarray:
        if self.is_master:
            if payload is None:
                raise UsageError("broadcast_bytes: the master must pass the payload")
            payload = _as_payload(payload)
        got = self.board.publish(self.rank, payload.copy() if self.is_master else None)
        if self.is_master:
            return payload  # type: ignore[return-value]
        self.bytes.down += got[0].size
        return got[0]

    def tree_sum(self, state: Any) -> np.ndarray:
        """The rounds of :func:`decomp.comm.tree.schedule` (node layout from
        ``DECOMP_NODE_LAYOUT``, else flat) on this rank's :class:`~decomp.compress.merge.
        RangeSum`, one :meth:`Board.publish` per round (every rank publishes in every
        round); ``up`` / ``down`` counted as the MPI transport counts them."""
        rows = schedule(self.size, state.d, from_env(self.size))

        def exchange(rd: Any, out: list[np.ndarray]) -> list[np.ndarray]:
            got = self.board.publish(self.rank, {p: m.copy() for (p, _, _), m in
                                                 zip(rd.sends, out, strict=True)})
            return [got[p][self.rank] for p, _, _ in rd.recvs]

        for rd in rows[self.rank]:  # idle rounds too: publish is collective
            if not rd.sends and not rd.recvs:
                self.board.publish(self.rank, {})
            else:
                up, down = run_rounds([rd], state, exchange)
                self.bytes.up += up
                self.bytes.down += down
        return state.total()

    def allreduce_sum(self, vec: np.ndarray) -> None:
        self.allreduce_uncounted(vec)
        if self.is_worker:
            self.bytes.up += vec.nbytes
        self.bytes.down += vec.nbytes

    def allreduce_chunks(self, words: np.ndarray, combine: Any) -> None:
        rows = np.stack(self.board.publish(self.rank, words.copy()))
        words[:] = combine(rows)
        if self.is_worker:
            self.bytes.up += words.nbytes
        self.bytes.down += words.nbytes

    def allreduce_uncounted(self, vec: np.ndarray) -> None:
        sum_in_rank_order(self.board, self.rank, vec)
