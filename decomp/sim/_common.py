"""Pieces shared by the master–worker references (:mod:`decomp.sim.masterworker`,
:mod:`decomp.sim.ef21_sgdm`, :mod:`decomp.sim.sgdm`): the result type and the row-wise oracle
and compressor calls on n x d arrays (row i = worker i)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decomp.algorithms.env import stream_key
from decomp.compress import Compressor
from decomp.problems import Problem, oracle_grad


@dataclass
class Trace:
    """xs: (T+1, d) iterates x^0..x^T; bytes_up: (n,) payload bytes each worker sent;
    state: final named arrays (e.g. G = all g_i, g, E = all e_i)."""

    xs: np.ndarray
    bytes_up: np.ndarray
    state: dict[str, np.ndarray] = field(default_factory=dict)


def _grads(problems: Sequence[Problem], x: np.ndarray, seed: int, step: int,
           batch_size: int | None) -> np.ndarray:
    """(n, d): row i = ∇f_i(x) (or its minibatch estimate at ``step``)."""
    return np.stack([oracle_grad(p, x, seed=seed, worker=i, step=step, batch_size=batch_size)
                     for i, p in enumerate(problems)])


def _compress(C: Compressor, M: np.ndarray, seed: int, step: int, stream: int = 0) -> np.ndarray:
    """(n, d): row i = C(M[i]) with worker i's key on ``stream`` (the runtime's allocator,
    :func:`decomp.algorithms.env.stream_key`)."""
    n = M.shape[0]
    return np.stack([C.reference(M[i], stream_key(seed, i, n, step, stream)) for i in range(n)])


class WorkerSum:
    """Σ_i V[i] over the workers in the order the run's transport forms it, and the bytes
    each worker's rank sends for it.

    aggregation "gather": rows added in worker order (``V.sum(axis=0)``, as the master
    decodes the payloads); each worker sends its payload (``per_msg`` bytes). "tree": the
    schedule of :mod:`decomp.comm.tree` run on one :class:`~decomp.compress.merge.RangeSum`
    per worker (:func:`decomp.comm.tree.run_all`; node layout ``DECOMP_NODE_LAYOUT``, else
    flat, :mod:`decomp.comm.nodes`) — the MPI transport's own arithmetic and messages; a
    row's present entries are its non-zeros for a sparse compressor (an entry a worker
    selected with the value exactly 0 is not told apart from one it did not select), every
    entry otherwise. On the tree the sizes vary from step to step; ``up`` lists, per sum,
    the mean bytes a worker sent, ``down`` the bytes received summed over the ranks and
    divided by n − 1 (what decomp sim multiplies by the n − 1 receivers of a broadcast; its
    mean per rank then is the transports' count), ``recv`` each rank's received bytes
    (:meth:`traffic` puts ``up`` and ``down`` in a trace's ``state``)."""

    def __init__(self, aggregation: str, d: int, dtype: Any) -> None:
        from decomp.comm.tree import check_aggregation

        self.aggregation = check_aggregation(aggregation)
        self.d, self.dtype = d, np.dtype(dtype)
        self.up: list[float] = []
        self.down: list[float] = []
        self.recv: list[np.ndarray] = []
        self._states: list[Any] = []

    def traffic(self, steps: int) -> dict[str, np.ndarray]:
        """{} on the gather (every payload has the compressor's size); on the tree
        ``up_bytes`` and ``down_bytes`` (steps + 1,): per step t, the mean bytes a worker
        sent and the received bytes as :attr:`down` lists them (steps without a sum: 0)."""
        if self.aggregation == "gather":
            return {}
        up, down = np.zeros(steps + 1), np.zeros(steps + 1)
        k = len(self.up)
        up[steps + 1 - k:] = self.up
        down[steps + 1 - k:] = self.down
        return {"up_bytes": up, "down_bytes": down}

    def __call__(self, V: np.ndarray, C: Compressor, sent: np.ndarray) -> np.ndarray:
        """The sum of the rows of V (n, d) compressed by C; adds each worker's bytes to
        ``sent`` (n,)."""
        if self.aggregation == "gather":
            sent += C.payload_bytes(self.d, self.dtype)
            return V.sum(axis=0)
        from decomp.comm.nodes import from_env
        from decomp.comm.tree import run_all
        from decomp.compress.aggregate import sparse_count
        from decomp.compress.merge import RangeSum

        n = V.shape[0]
        if len(self._states) != n:
            self._states = [RangeSum(self.d, self.dtype) for _ in range(n)]
        sparse = sparse_count(C, self.d) is not None
        for st, v in zip(self._states, V, strict=True):
            st.start_dense(v, v != 0 if sparse else True)
        counts = run_all(self._states, from_env(n))
        mine = np.array([u for u, _ in counts], dtype=np.int64)
        got = np.array([r for _, r in counts], dtype=np.int64)
        sent += mine
        self.up.append(float(mine.mean()))
        self.down.append(float(got.sum()) / (n - 1) if n > 1 else 0.0)
        self.recv.append(got)
        return self._states[0].acc.copy()
