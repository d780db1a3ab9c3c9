"""Any ``torch.utils.data.Dataset`` across ranks: shards, a sampler, rows fetched on demand.

- :func:`shard_indices`: the n workers' shards of a dataset by :func:`decomp.datasets.partition`
  (iid, contiguous, by_label, dirichlet). iid and contiguous need only ``len(dataset)``; the
  label-based ones need every row's label (:func:`dataset_labels`: ``labels=``, the dataset's
  ``targets``/``labels``/``y``, a ``TensorDataset``'s last tensor, a ``Subset``'s parent, or
  one pass reading ``dataset[i][1]``). No features are read.
- :class:`ShardSampler`: a ``torch.utils.data.Sampler`` giving this rank only its shard's
  indices (reshuffled per epoch), the same number on every rank so every rank takes the same
  number of steps: ``DataLoader(dataset, batch_size=32, sampler=ShardSampler(dataset))``.
- :class:`DatasetRows`: rows of a dataset by index, fetched and collated per batch (the
  Trainer's shards and test sets of a torch dataset), never the whole set in memory.

Randomness: shards are the partition's (seed); the epoch order of rank r is drawn from
(seed, r, epoch, MINIBATCH).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, Subset, TensorDataset, default_collate

from decomp.data.classification import PARTITIONS, partition
from decomp.errors import ConfigError, DataError
from decomp.rng import Purpose, generator

Collate = Callable[[list[Any]], Any]


def _as_labels(y: Any) -> np.ndarray:
    a = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return a.reshape(len(a)) if a.ndim > 1 and a.shape[1:] == (1,) * (a.ndim - 1) else a


def dataset_labels(dataset: Any, labels: Any = None) -> np.ndarray:
    """Every row's label (N,) for the label-based partitions, read without the features:
    ``labels`` if given, else the dataset's ``targets`` / ``labels`` / ``y`` attribute, a
    ``TensorDataset``'s last tensor, a ``Subset``'s parent's labels at its indices, or (the
    fallback, one pass over the dataset) ``dataset[i][1]`` for every i."""
    if labels is not None:
        out = _as_labels(labels)
    elif isinstance(dataset, Subset):
        out = dataset_labels(dataset.dataset)[np.asarray(dataset.indices)]
    elif isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        out = _as_labels(dataset.tensors[-1])
    else:
        attr = next((getattr(dataset, a) for a in ("targets", "labels", "y")
                     if getattr(dataset, a, None) is not None), None)
        out = (_as_labels(attr) if attr is not None
               else _as_labels([_target(dataset[i]) for i in range(len(dataset))]))
    if out.ndim != 1 or out.size != len(dataset):
        raise DataError(f"labels: expected one label per row ({len(dataset)}), got shape "
                        f"{out.shape}")
    return out


def _target(item: Any) -> Any:
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DataError("a label-based partition needs (input, target) items or labels=")
    t = item[1]
    return t.item() if isinstance(t, torch.Tensor) and t.numel() == 1 else t


def shard_indices(dataset: Any, n_workers: int, mode: str = "iid", *, seed: int = 0,
                  alpha: float = 0.5, min_size: int = 1, labels: Any = None) -> list[np.ndarray]:
    """Row indices (sorted int64) of each of ``n_workers`` shards of ``dataset`` (a sized
    dataset, or its length N) by :func:`decomp.datasets.partition`; labels are read only for
    ``by_label`` / ``dirichlet`` (see :func:`dataset_labels`)."""
    if mode not in PARTITIONS:
        raise ConfigError(f"partition must be one of {PARTITIONS}, got {mode!r}")
    if mode in ("by_label", "dirichlet"):
        if isinstance(dataset, int):
            if labels is None:
                raise ConfigError(f"partition {mode!r} needs labels=")
            y = _as_labels(labels)
        else:
            y = dataset_labels(dataset, labels)
    else:  # only the number of rows matters: no labels, no features
        y = np.zeros(dataset if isinstance(dataset, int) else len(dataset), dtype=np.int8)
    return partition(y, n_workers, mode, seed=seed, alpha=alpha, min_size=min_size)


class ShardSampler(Sampler[int]):
    """This rank's shard of ``dataset`` for a ``DataLoader`` (like torch's
    ``DistributedSampler``, over decomp's partitions).

    Args:
        dataset: a sized dataset (or its length); only its length (and, for by_label /
            dirichlet, its labels) is read.
        partition: iid | contiguous | by_label | dirichlet (``alpha``: Dirichlet
            concentration); ``labels``: every row's label, if the dataset does not expose them.
        comm: mpi4py communicator giving ``rank`` and ``n_workers`` (default COMM_WORLD), or
            pass ``rank`` and ``n_workers`` explicitly.
        seed: partition seed and epoch-order seed.
        shuffle: a new order of the shard every epoch (:meth:`set_epoch`); else shard order.
        num_samples: indices per epoch, the same on every rank (default: the largest shard's
            size; a smaller shard wraps around with a fresh order), so every rank takes the
            same number of steps per epoch and no collective is left waiting.

    Attributes: ``indices`` this rank's shard (int64, ascending); ``shards`` every rank's.
    """

    def __init__(self, dataset: Any, *, partition: str = "iid", comm: Any = None,
                 rank: int | None = None, n_workers: int | None = None, seed: int = 0,
                 alpha: float = 0.5, labels: Any = None, shuffle: bool = True,
                 num_samples: int | None = None, min_size: int = 1) -> None:
        if rank is None or n_workers is None:
            if comm is None:
                from mpi4py import MPI

                comm = MPI.COMM_WORLD
            rank, n_workers = comm.Get_rank(), comm.Get_size()
        if not 0 <= rank < n_workers:
            raise ConfigError(f"rank {rank} is not one of {n_workers} workers")
        self.rank, self.n_workers, self.seed = int(rank), int(n_workers), int(seed)
        self.shuffle = shuffle
        self.shards = shard_indices(dataset, self.n_workers, partition, seed=seed, alpha=alpha,
                                    min_size=min_size, labels=labels)
        self.indices = self.shards[self.rank]
        self.num_samples = (max(s.size for s in self.shards) if num_samples is None
                            else int(num_samples))
        if self.num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order :meth:`__iter__` gives (call it before each epoch)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        shard, n = self.indices, self.num_samples
        if not self.shuffle:
            reps = math.ceil(n / shard.size)
            return iter(np.tile(shard, reps)[:n].tolist())
        rng = generator(self.seed, self.rank, self.epoch, Purpose.MINIBATCH)
        parts, have = [], 0
        while have < n:
            parts.append(shard[rng.permutation(shard.size)])
            have += shard.size
        return iter(np.concatenate(parts)[:n].tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (f"ShardSampler(rank {self.rank} of {self.n_workers}, {self.indices.size} rows, "
                f"{self.num_samples} per epoch)")


class DatasetRows:
    """Rows ``indices`` of a torch ``dataset`` (all rows by default), fetched and collated
    per batch: ``batch(rows)`` gives (inputs, targets) for positions ``rows`` (an int array
    or a slice into ``indices``), i.e. ``collate_fn([dataset[indices[r]] for r in rows])``.
    Items must be (input, target) pairs; ``collate_fn`` defaults to torch's."""

    def __init__(self, dataset: Any, indices: Any = None, *,
                 collate_fn: Collate | None = None) -> None:
        if not isinstance(dataset, Dataset) and not hasattr(dataset, "__getitem__"):
            raise ConfigError(f"expected a torch Dataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.indices = (np.arange(len(dataset), dtype=np.int64) if indices is None
                        else np.asarray(indices, dtype=np.int64))
        self.collate_fn = collate_fn or default_collate
        self.shape = (int(self.indices.size),)  # rows, as X.shape[0] of an array

    def __len__(self) -> int:
        return int(self.indices.size)

    def subset(self, rows: Any) -> DatasetRows:
        """The rows at positions ``rows`` (an int array or slice) as another DatasetRows."""
        return DatasetRows(self.dataset, self.indices[rows], collate_fn=self.collate_fn)

    def batch(self, rows: Any) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.indices[rows]
        out = self.collate_fn([self.dataset[int(i)] for i in idx])
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise DataError("dataset items must be (input, target) pairs")
        x, y = out
        if isinstance(x, torch.Tensor) and x.dtype == torch.float64:
            x = x.float()
        return x, y

    def targets_are_labels(self) -> bool:
        """Whether the first item's target is an integer class label (classification)."""
        _, y = self.batch(slice(0, 1))
        return isinstance(y, torch.Tensor) and not y.is_floating_point() and y.ndim == 1

    def __repr__(self) -> str:
        return f"DatasetRows({type(self.dataset).__name__}, {len(self)} rows)"




class TrainingData:
    """What :class:`decomp.Trainer` trains and evaluates on, whatever the user passed: a
    :class:`decomp.datasets.SplitDataset` (arrays), or any torch ``Dataset`` (rows fetched per
    batch) with an optional ``test_dataset``.

    Attributes: ``name``; ``n_train``; ``labels`` (N,) integer class labels when the targets
    are labels (the label table, by_label / dirichlet shards), else None; ``n_classes``;
    ``test`` (X_test, y_test) — arrays, or a :class:`DatasetRows` and None — or None.
    """

    def __init__(self, dataset: Any, *, test_dataset: Any = None, labels: Any = None,
                 collate_fn: Collate | None = None) -> None:
        from decomp.data.classification import SplitDataset

        self.split = dataset if isinstance(dataset, SplitDataset) else None
        self.rows: DatasetRows | None = None
        if self.split is not None:
            d = self.split
            if test_dataset is not None:
                raise ConfigError("test_dataset is for a torch Dataset; a SplitDataset has "
                                  "its own test set")
            self.name, self.n_train = d.name, d.n_train
            y = np.asarray(d.y)
            self.labels = y if y.ndim == 1 and np.issubdtype(y.dtype, np.integer) else None
            self.n_classes: int | None = d.n_classes if self.labels is not None else None
            self.test: tuple[Any, Any] | None = (d.X_test, d.y_test)
            return
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ConfigError(f"dataset must be a decomp.datasets.SplitDataset, a dataset name "
                              f"or a sized torch Dataset, got {type(dataset).__name__}")
        self.name, self.n_train = type(dataset).__name__, len(dataset)
        self.rows = DatasetRows(dataset, collate_fn=collate_fn)
        self.labels = None
        if labels is not None or self.rows.targets_are_labels():
            y = dataset_labels(dataset, labels)
            if np.issubdtype(y.dtype, np.integer):
                self.labels = y.astype(np.int64)
        self.n_classes = int(self.labels.max()) + 1 if self.labels is not None else None
        self.test = (None if test_dataset is None
                     else (DatasetRows(test_dataset, collate_fn=collate_fn), None))

    def shards(self, n_workers: int, mode: str, *, seed: int, alpha: float,
               min_size: int) -> list[np.ndarray]:
        """The workers' row indices (:func:`shard_indices`; label-based modes need labels)."""
        if mode in ("by_label", "dirichlet") and self.labels is None:
            raise ConfigError(f"partition {mode!r} needs integer class labels (the targets "
                              "are not labels): use iid or contiguous, or pass labels=")
        return shard_indices(self.n_train, n_workers, mode, seed=seed, alpha=alpha,
                             min_size=min_size,
                             labels=self.labels if mode in ("by_label", "dirichlet") else None)

    def shard(self, rows: np.ndarray) -> tuple[Any, Any]:
        """(X, y) of a worker's rows for :class:`~decomp.torch.TorchProblem`."""
        if self.rows is not None:
            return self.rows.subset(rows), None
        assert self.split is not None
        return self.split.X[rows], self.split.y[rows]


__all__ = ["DatasetRows", "ShardSampler", "TrainingData", "dataset_labels", "shard_indices"]
