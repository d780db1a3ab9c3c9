"""Test-set evaluation of torch models across MPI ranks (collective, off the clock, uncounted).

Used by :class:`decomp.Trainer` and by ``decomp run`` for ``problem.kind = "torch"``.

- :meth:`TestEvaluator.master`: one model x, identical on every rank (the master–worker family,
  the all-reduce baselines): the test rows are split across the ranks, each evaluates its slice
  and the sums are all-reduced.
- :meth:`TestEvaluator.nodes`: every rank holds its own x_i (the decentralized family):
  x̄ = (1/n) Σ_i x_i on the test set (split across the ranks), each x_i on the whole test set
  (its own BatchNorm statistics), and the consensus distance (1/n) Σ_i ‖x_i − x̄‖².

BatchNorm statistics (``buffers``): "average" evaluates the shared model (x or x̄) with the mean
of the workers' running statistics; "local" with rank 0's. See docs/torch.md.

Metrics (:mod:`decomp.torch.metrics`): the loss always (``test_loss``), and ``test_<name>`` for
each metric (default: ``acc`` when the targets are integer class labels, nothing for
regression). The test set is arrays (X_test, y_test) or a
:class:`~decomp.torch.data.DatasetRows` (any torch Dataset, y_test None).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from decomp.errors import ConfigError
from decomp.torch.data import DatasetRows
from decomp.torch.flat import FlatModel
from decomp.torch.metrics import resolve_metrics
from decomp.torch.problem import LossFn, evaluate_sums

BUFFER_MODES = ("average", "local")


class TestEvaluator:
    """Collective evaluation of this rank's :class:`FlatModel` on a test set.

    Args:
        flat: this rank's flat model (its parameters are loaded with the evaluated vector; its
            ``buffers`` hold this rank's BatchNorm statistics).
        loss_fn: ℓ(output, target) with mean reduction.
        X_test, y_test: the whole test set, (N, ...) and (N,) (every rank holds it), or a
            :class:`~decomp.torch.data.DatasetRows` and None (rows fetched when evaluated).
        comm: the mpi4py communicator of all ranks taking part.
        buffers: "average" | "local".
        chunk: rows per forward pass.
        metrics: see :func:`decomp.torch.metrics.resolve_metrics` (None: accuracy for integer
            targets, else none).
    """

    __test__ = False  # not a pytest class

    def __init__(self, flat: FlatModel, loss_fn: LossFn, X_test: Any, y_test: Any, comm: Any,
                 *, buffers: str = "average", chunk: int = 1024, metrics: Any = None) -> None:
        if buffers not in BUFFER_MODES:
            raise ConfigError(f"buffers must be one of {BUFFER_MODES}, got {buffers!r}")
        self.flat = flat
        self.loss_fn = loss_fn
        self.X_test = X_test
        self.y_test = y_test
        self.comm = comm
        self.buffers = buffers
        self.chunk = int(chunk)
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()
        n_test = int(X_test.shape[0])
        self.rows = np.array_split(np.arange(n_test), self.size)[self.rank]
        if isinstance(X_test, DatasetRows):
            labels = X_test.targets_are_labels() if n_test else False
            self.mine: tuple[Any, Any] = (X_test.subset(self.rows), None)
        else:
            y = np.asarray(y_test) if not hasattr(y_test, "is_floating_point") else y_test
            labels = (y.ndim == 1 and not np.issubdtype(y.dtype, np.floating)
                      if isinstance(y, np.ndarray) else not y.is_floating_point())
            self.mine = (X_test[self.rows], y_test[self.rows])
        self.metrics = resolve_metrics(metrics, bool(labels))

    def _allreduce(self, vec: np.ndarray) -> np.ndarray:
        from mpi4py import MPI

        self.comm.Allreduce(MPI.IN_PLACE, vec, op=MPI.SUM)
        return vec

    def _sums(self, x: np.ndarray, X: Any, y: Any) -> np.ndarray:
        return evaluate_sums(self.flat, self.loss_fn, x, X, y, metrics=self.metrics,
                             chunk=self.chunk)

    def _slice(self, x: np.ndarray) -> np.ndarray:
        """[Σ ℓ, Σ metric..., rows] of x on this rank's test slice, summed over ranks."""
        return self._allreduce(self._sums(x, *self.mine))

    def _named(self, sums: np.ndarray, suffix: str = "") -> dict[str, float]:
        """{test_loss, test_<metric>...} from [Σ ℓ, Σ metric..., rows]."""
        names = ["loss", *self.metrics]
        return {f"test_{k}{suffix}": float(v / sums[-1]) for k, v in zip(names, sums[:-1],
                                                                       strict=True)}

    def master(self, x: np.ndarray, *, is_worker: bool = True,
               n_workers: int | None = None) -> dict[str, float]:
        """test_loss / test_acc of x (d,) float32, the same vector on every rank.

        is_worker: False on a dedicated master (its statistics do not count in the average);
        n_workers: the number of ranks that are workers (default: all).

        "average" replaces every rank's statistics by the workers' mean for good: running
        statistics are exponential moving averages, linear in the batch statistics, so this
        equals averaging them every step. "local" evaluates with rank 0's and restores the
        others' own afterwards.
        """
        b = self.flat.buffers
        restore = None
        if b.size:
            if self.buffers == "average":
                acc = b.astype(np.float64) if is_worker else np.zeros(b.size)
                self._allreduce(acc)
                b[:] = acc / (n_workers or self.size)
            else:
                restore = b.copy()
                self.comm.Bcast(b, root=0)
        try:
            sums = self._slice(x)
        finally:
            if restore is not None:
                b[:] = restore
        return self._named(sums)

    def nodes(self, x_local: np.ndarray) -> dict[str, Any]:
        """Decentralized evaluation; x_local: this rank's x_i (d,).

        Returns test_loss / test_<metric> of x̄ (with the workers' mean statistics when
        buffers = "average", else rank 0's), test_loss_i / test_<metric>_i (lists in rank
        order: each x_i on the whole test set with its own statistics), their means
        (test_loss_mean, test_<metric>_mean), test_acc_min (with accuracy), and
        consensus_distance (1/n) Σ_i ‖x_i − x̄‖². The rank's parameters and statistics are
        left as they were. Every rank returns the same.
        """
        size = self.size
        flat = self.flat
        own = flat.buffers.copy()
        xi = np.ascontiguousarray(x_local, dtype=np.float32)
        xbar = self._allreduce(xi.astype(np.float64))
        xbar /= size
        cons = self._allreduce(np.array([float(np.sum((xi - xbar) ** 2))]))
        whole = self._sums(xi, self.X_test, self.y_test)
        per_rank = self.comm.allgather((whole[:-1] / whole[-1]).tolist())
        saved = flat.params.copy()
        try:
            if flat.buffers.size:
                if self.buffers == "average":
                    b = self._allreduce(flat.buffers.astype(np.float64))
                    flat.buffers[:] = b / size
                else:
                    self.comm.Bcast(flat.buffers, root=0)
            t2 = self._slice(xbar.astype(np.float32))
        finally:
            flat.load(saved)
            flat.buffers[:] = own
        out: dict[str, Any] = self._named(t2)
        for k, name in enumerate(["loss", *self.metrics]):
            vals = [float(r[k]) for r in per_rank]
            out[f"test_{name}_mean"] = float(np.mean(vals))
            out[f"test_{name}_i"] = vals
            if name == "acc":
                out["test_acc_min"] = float(min(vals))
        out["consensus_distance"] = float(cons[0] / size)
        return out


__all__ = ["BUFFER_MODES", "TestEvaluator"]
