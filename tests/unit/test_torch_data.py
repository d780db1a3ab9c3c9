"""decomp.torch.data (shards of any torch Dataset, ShardSampler, DatasetRows), the metrics, and
the Trainer on a torch Dataset / a regression loss, on one process (MPI.COMM_SELF)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from decomp.algorithms import DCDPSGD, EF21, GD
from decomp.compress import QSGD, TopK
from decomp.data.classification import load, partition
from decomp.errors import ConfigError
from decomp.torch.data import (
    DatasetRows,
    ShardSampler,
    TrainingData,
    dataset_labels,
    shard_indices,
)
from decomp.torch.metrics import resolve_metrics


class Counting(Dataset):
    """A dataset that records which rows were read (and has no labels attribute)."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor) -> None:
        self.X, self.yy = X, y
        self.read: set[int] = set()

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int):
        self.read.add(i)
        return self.X[i], self.yy[i]


@pytest.fixture(scope="module")
def self_comm():
    from mpi4py import MPI

    return MPI.COMM_SELF


def _cls(n: int = 300):
    ds = load("synthetic", n_samples=n, n_features=10, n_classes=3)
    return ds, TensorDataset(torch.from_numpy(ds.X), torch.from_numpy(ds.y))


@pytest.mark.parametrize("mode", ["iid", "contiguous", "by_label", "dirichlet"])
def test_shards_equal_the_partition_and_read_no_features(mode: str) -> None:
    ds, _ = _cls()
    counting = Counting(torch.from_numpy(ds.X), torch.from_numpy(ds.y))
    parts = shard_indices(counting, 4, mode, seed=3, alpha=0.7, labels=ds.y)
    ref = partition(ds.y, 4, mode, seed=3, alpha=0.7)
    assert all(np.array_equal(a, b) for a, b in zip(parts, ref, strict=True))
    assert counting.read == set()  # labels given (or not needed): no row read


def test_labels_come_from_the_dataset_without_features() -> None:
    ds, tds = _cls()
    assert np.array_equal(dataset_labels(tds), ds.y)
    sub = Subset(tds, list(range(10, 40)))
    assert np.array_equal(dataset_labels(sub), ds.y[10:40])
    counting = Counting(torch.from_numpy(ds.X), torch.from_numpy(ds.y))
    assert np.array_equal(dataset_labels(counting), ds.y)  # the fallback: one pass
    with pytest.raises(Exception, match="labels"):
        dataset_labels(tds, labels=ds.y[:5])


def test_the_sampler_gives_each_rank_its_shard_the_same_number_of_times_per_epoch() -> None:
    ds, tds = _cls(301)
    samplers = [ShardSampler(tds, partition="dirichlet", rank=r, n_workers=4, seed=1,
                             alpha=0.3) for r in range(4)]
    sizes = [s.indices.size for s in samplers]
    assert len(set(sizes)) > 1  # Dirichlet shards differ in size ...
    assert {len(s) for s in samplers} == {max(sizes)}  # ... the epochs do not
    for s in samplers:
        e0 = list(s)
        assert set(e0) == set(s.indices.tolist())  # only its own rows, all of them
        assert list(s) == e0  # deterministic
        s.set_epoch(1)
        assert list(s) != e0 and set(s) == set(e0)  # a new order next epoch
    loader = DataLoader(tds, batch_size=16, sampler=samplers[0])
    seen = torch.cat([y for _, y in loader])
    assert seen.numel() == len(samplers[0])
    plain = ShardSampler(tds, partition="contiguous", rank=1, n_workers=4, shuffle=False)
    assert list(plain)[:3] == plain.indices[:3].tolist()


def test_dataset_rows_fetch_only_the_batch() -> None:
    ds, _ = _cls()
    counting = Counting(torch.from_numpy(ds.X), torch.from_numpy(ds.y))
    rows = DatasetRows(counting, [5, 7, 9, 11]).subset(slice(1, 3))
    X, y = rows.batch(np.array([0, 1]))
    assert counting.read == {7, 9}
    assert torch.equal(X, torch.from_numpy(ds.X[[7, 9]])) and rows.targets_are_labels()


def test_metrics_resolve_and_refuse() -> None:
    assert list(resolve_metrics(None, True)) == ["acc"]
    assert resolve_metrics(None, False) == {}
    assert list(resolve_metrics(["mse", "mae"], False)) == ["mse", "mae"]
    assert list(resolve_metrics({"r": lambda o, t: 0.0}, False)) == ["r"]
    with pytest.raises(ConfigError, match="unknown metric"):
        resolve_metrics(["f1"], True)
    with pytest.raises(ConfigError, match="loss"):
        resolve_metrics({"loss": "mse"}, True)


@pytest.mark.parametrize("algorithm", ["ef21", "dcd"])
def test_the_trainer_on_a_tensor_dataset_equals_the_trainer_on_arrays(self_comm,
                                                                      algorithm: str) -> None:
    import decomp

    ds, tds = _cls()
    test = TensorDataset(torch.from_numpy(ds.X_test), torch.from_numpy(ds.y_test))

    def make():
        return EF21(TopK(ratio=0.2), lr=0.1) if algorithm == "ef21" else DCDPSGD(
            QSGD(levels=127), lr=0.1)

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))

    a = decomp.Trainer(net(), nn.CrossEntropyLoss(), ds, make(), batch_size=8,
                       comm=self_comm, verbose=False, partition="by_label")
    b = decomp.Trainer(net(), nn.CrossEntropyLoss(), tds, make(), batch_size=8,
                       comm=self_comm, verbose=False, partition="by_label", test_dataset=test)
    ha, hb = a.fit(12, 6), b.fit(12, 6)
    assert np.array_equal(a.x, b.x)
    timing = ("wall_s", "compute_s", "compress_s", "comm_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in ha] == \
        [{k: v for k, v in r.items() if k not in timing} for r in hb]
    assert np.array_equal(a.label_counts, b.label_counts)


def test_the_trainer_does_regression_with_mse_and_chosen_metrics(self_comm, capsys) -> None:
    import decomp

    g = torch.Generator().manual_seed(0)
    X = torch.randn(400, 5, generator=g)
    w = torch.arange(1.0, 6.0)
    y = X @ w + 0.01 * torch.randn(400, generator=g)
    train, test = TensorDataset(X[:300], y[:300]), TensorDataset(X[300:], y[300:])
    model = nn.Sequential(nn.Linear(5, 1), nn.Flatten(0))
    tr = decomp.Trainer(model, nn.MSELoss(), train, GD(lr=0.05), batch_size=16,
                        comm=self_comm, test_dataset=test, metrics=["mse", "mae"])
    hist = tr.fit(200, 100)
    out = capsys.readouterr().out
    assert "rows per worker" in out and "test acc" not in out
    assert set(hist[-1]) >= {"test_loss", "test_mse", "test_mae"} and "test_acc" not in hist[-1]
    assert hist[-1]["test_mse"] == pytest.approx(hist[-1]["test_loss"], rel=1e-5)
    assert hist[-1]["test_mse"] < 0.01 < hist[0]["test_mse"]
    with pytest.raises(ConfigError, match="class labels"):
        decomp.Trainer(nn.Linear(5, 1), nn.MSELoss(), train, GD(lr=0.1), comm=self_comm,
                       partition="dirichlet", verbose=False)
    no_test = decomp.Trainer(nn.Sequential(nn.Linear(5, 1), nn.Flatten(0)), nn.MSELoss(),
                             train, GD(lr=0.05), batch_size=16, comm=self_comm, verbose=False)
    rows = no_test.fit(5)
    assert "test_loss" not in rows[-1] and rows[-1]["loss"] > 0


def test_training_data_refuses_what_it_cannot_use() -> None:
    ds, tds = _cls()
    with pytest.raises(ConfigError, match="test_dataset"):
        TrainingData(ds, test_dataset=tds)
    with pytest.raises(ConfigError, match="sized torch Dataset"):
        TrainingData(object())
