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
    binomial tree's grouping (:func:`decomp.comm.tree.binomial_fold`) and each rank sends
    its subtree's sum message (:func:`decomp.compress.merge.sum_message_bytes`: sparse over
    the union of the subtree's supports for a sparse compressor — an entry a worker selected
    with the value exactly 0 is not told apart from one it did not select — dense otherwise;
    rank 0 sends nothing). On the tree these sizes vary from step to step; ``up`` and
    ``down`` list, per sum, the mean bytes a worker sent and the size of the total that comes
    down (:meth:`traffic` puts them in a trace's ``state``)."""

    def __init__(self, aggregation: str, d: int, dtype: Any) -> None:
        from decomp.comm.tree import check_aggregation

        self.aggregation = check_aggregation(aggregation)
        self.d, self.dtype = d, np.dtype(dtype)
        self.up: list[float] = []
        self.down: list[int] = []

    def traffic(self, steps: int) -> dict[str, np.ndarray]:
        """{} on the gather (every payload has the compressor's size); on the tree
        ``up_bytes`` and ``down_bytes`` (steps + 1,): per step t, the mean bytes a worker
        sent and the bytes of the total broadcast (steps without a sum: 0)."""
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
        from decomp.comm.tree import binomial_fold
        from decomp.compress.aggregate import sparse_count
        from decomp.compress.merge import sum_message_bytes

        sparse = sparse_count(C, self.d) is not None
        mine = np.zeros(V.shape[0], dtype=np.int64)

        def size(mask: np.ndarray) -> int:
            return sum_message_bytes(int(mask.sum()) if sparse else None, self.d, self.dtype)

        def up(r: int, item: tuple[np.ndarray, np.ndarray]) -> None:
            mine[r] += size(item[1])

        total, mask = binomial_fold([(v, v != 0) for v in V],
                                    lambda a, b: (a[0] + b[0], a[1] | b[1]), up)
        sent += mine
        self.up.append(float(mine.mean()))
        self.down.append(size(mask))
        return total
