"""decomp.datasets: offline loaders, the restricted CIFAR unpickler, partitions."""

from __future__ import annotations

import os
import pickle
import random
import socket
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from decomp import datasets as D
from decomp.errors import ConfigError, DataError


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("a dataset loader tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_mnist1d_is_generated_offline_and_leaves_global_rngs_alone(no_network) -> None:
    import mnist1d  # noqa: F401  (pinned: a missing mnist1d fails here)
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002
    py_state = random.getstate()
    ds = D.load("mnist1d", n_samples=1000)
    assert ds.X.shape == (800, 40) and ds.X_test.shape == (200, 40)
    assert ds.X.dtype == np.float32 and ds.y.dtype == np.int64 and ds.n_classes == 10
    assert set(np.unique(ds.y)) == set(range(10))
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002
    assert random.getstate() == py_state
    again = D.load("mnist1d", n_samples=1000)
    np.testing.assert_array_equal(ds.X, again.X)
    other = D.load("mnist1d", n_samples=1000, seed=1)
    assert not np.array_equal(ds.X, other.X)


def test_digits_are_scaled_and_split_deterministically(no_network) -> None:
    ds = D.load("digits")
    assert ds.X.shape[1:] == (64,) and ds.n_train + ds.n_test == 1797
    assert 0.0 <= ds.X.min() and ds.X.max() <= 1.0
    np.testing.assert_array_equal(ds.y_test, D.load("digits").y_test)
    assert ds.n_test == round(0.2 * 1797)


def _write_libsvm(path: Path, rows: list[tuple[int, dict[int, float]]]) -> None:
    path.write_text("".join(f"{y} " + " ".join(f"{j}:{v}" for j, v in feats.items()) + "\n"
                            for y, feats in rows))


def test_libsvm_dense_and_sparse_with_a_test_file(tmp_path: Path) -> None:
    train = [(3, {1: 0.5, 4: 1.0}), (7, {2: 2.0}), (3, {3: -1.0}), (9, {1: 1.0, 2: 1.0})]
    _write_libsvm(tmp_path / "toy", train)
    _write_libsvm(tmp_path / "toy.t", [(7, {4: 3.0}), (9, {1: 0.25})])
    dense = D.load("libsvm:toy", data_dir=tmp_path)
    assert dense.X.shape == (4, 4) and dense.X.dtype == np.float32
    np.testing.assert_array_equal(dense.y, [0, 1, 0, 2])  # labels 3, 7, 9 -> 0, 1, 2
    np.testing.assert_array_equal(dense.y_test, [1, 2])
    assert dense.n_classes == 3 and dense.X_test[0, 3] == 3.0
    sparse = D.load("libsvm:toy", data_dir=tmp_path, sparse=True)
    assert sp.issparse(sparse.X)
    np.testing.assert_array_equal(sparse.X.toarray(), dense.X)
    # without a .t file: a seeded split
    _write_libsvm(tmp_path / "solo", train * 5)
    s = D.load(str(tmp_path / "solo"), test_fraction=0.25)
    assert s.n_train == 15 and s.n_test == 5
    with pytest.raises(DataError, match="not found"):
        D.load("libsvm:absent", data_dir=tmp_path)


def _cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch", b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def _write_cifar(root: Path, n: int = 6, protocol: int = 2) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i in range(1, 6):
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(_cifar_batch(n, i), protocol=protocol))
    (d / "test_batch").write_bytes(pickle.dumps(_cifar_batch(n, 9), protocol=protocol))
    return d


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_loader_reads_the_python_batches(tmp_path: Path, protocol: int) -> None:
    _write_cifar(tmp_path, protocol=protocol)
    ds = D.load("cifar10", data_dir=tmp_path)
    assert ds.X.shape == (30, 3, 32, 32) and ds.X_test.shape == (6, 3, 32, 32)
    assert ds.X.dtype == np.float32 and ds.y.dtype == np.int64
    raw = _cifar_batch(6, 1)
    x0 = raw[b"data"][0].reshape(3, 32, 32).astype(np.float32) / 255
    want = (x0 - np.array(D.CIFAR10_MEAN, np.float32)[:, None, None]) / np.array(
        D.CIFAR10_STD, np.float32)[:, None, None]
    np.testing.assert_allclose(ds.X[0], want, rtol=1e-6)
    np.testing.assert_array_equal(ds.y[:6], raw[b"labels"])
    assert D.load("cifar10", data_dir=tmp_path, train_batches=2).n_train == 12


def test_cifar10_missing_files_are_named(tmp_path: Path) -> None:
    d = _write_cifar(tmp_path)
    (d / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch"):
        D.load("cifar10", data_dir=tmp_path)


class _CallsSystem:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


class _Evil:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_the_restricted_unpickler_refuses_a_pickle_that_would_call_a_function(
        tmp_path: Path) -> None:
    for payload in (_CallsSystem(), _Evil(), {b"data": [_CallsSystem()]}):
        for protocol in (2, 4):
            blob = pickle.dumps(payload, protocol=protocol)
            with pytest.raises(DataError, match="refusing global"):
                D.restricted_load(blob)
    # a CIFAR batch file with a payload inside is refused before anything runs
    d = _write_cifar(tmp_path)
    batch = _cifar_batch(2, 0)
    batch[b"labels"] = _CallsSystem()
    (d / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="refusing global"):
        D.load("cifar10", data_dir=tmp_path)


def test_the_restricted_unpickler_admits_plain_data_only() -> None:
    plain = {"a": [1, 2.5, "s", b"b", (3, 4)], b"k": np.arange(5, dtype=np.int16),
             "m": np.ones((2, 3), np.float32), "s": np.float64(2.0)}
    for protocol in (2, 3, 4, 5):
        out = D.restricted_load(pickle.dumps(plain, protocol=protocol), encoding="ASCII")
        np.testing.assert_array_equal(out[b"k"], plain[b"k"])
        assert out["a"] == plain["a"] and out["m"].dtype == np.float32
    with pytest.raises(DataError, match="object arrays"):
        D.restricted_load(pickle.dumps(np.array([1, "x"], dtype=object), protocol=2))
    with pytest.raises(DataError, match="refusing global"):
        D.restricted_load(pickle.dumps({1, 2}, protocol=2))  # a set needs builtins.set
    with pytest.raises(DataError):
        D.restricted_load(b"not a pickle")


@pytest.mark.parametrize("mode", D.PARTITIONS)
def test_partitions_cover_every_row_exactly_once(mode: str) -> None:
    y = np.repeat(np.arange(5), [30, 20, 25, 15, 10])
    parts = D.partition(y, 4, mode, seed=3, alpha=0.5)
    assert len(parts) == 4
    allrows = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(allrows), np.arange(y.size))
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)
    again = D.partition(y, 4, mode, seed=3, alpha=0.5)
    for a, b in zip(parts, again, strict=True):
        np.testing.assert_array_equal(a, b)
    counts = D.label_counts(y, parts, 5)
    assert counts.shape == (4, 5) and counts.sum() == y.size
    np.testing.assert_array_equal(counts.sum(axis=0), np.bincount(y))
    if mode != "dirichlet":
        assert {p.size for p in parts} <= {25, 26}


def test_by_label_is_pathologically_non_iid_and_contiguous_keeps_order() -> None:
    y = np.tile(np.arange(4), 25)  # interleaved labels
    by = D.label_counts(y, D.partition(y, 4, "by_label"), 4)
    assert ((by > 0).sum(axis=1) == 1).all()  # one class per worker
    iid = D.label_counts(y, D.partition(y, 4, "iid", seed=0), 4)
    assert ((iid > 0).sum(axis=1) == 4).all()
    np.testing.assert_array_equal(D.partition(y, 4, "contiguous")[1], np.arange(25, 50))


def test_dirichlet_alpha_controls_heterogeneity() -> None:
    y = np.repeat(np.arange(10), 100)

    def spread(alpha: float) -> float:  # mean over workers of the largest class share
        c = D.label_counts(y, D.partition(y, 5, "dirichlet", seed=1, alpha=alpha), 10)
        return float(np.mean(c.max(axis=1) / c.sum(axis=1)))

    assert spread(0.05) > 0.4 and spread(100.0) < 0.2  # uniform would be 0.1
    with pytest.raises(DataError, match="raise alpha"):
        D.partition(np.repeat(np.arange(2), 10), 8, "dirichlet", alpha=0.01, min_size=2)


def test_bad_partition_arguments_are_clear_errors() -> None:
    y = np.zeros(10, np.int64)
    with pytest.raises(ConfigError, match="partition must be one of"):
        D.partition(y, 2, "random")
    with pytest.raises(DataError, match="cannot be split"):
        D.partition(y, 4, "iid", min_size=3)
    with pytest.raises(ConfigError, match="unknown dataset"):
        D.load("mnist2d")


def test_label_count_table_has_one_row_per_worker() -> None:
    text = D.format_label_counts(np.array([[3, 0], [1, 12]]), "title")
    lines = text.splitlines()
    assert lines[0] == "title" and lines[1].split() == ["worker", "0", "1", "total"]
    assert lines[3].split() == ["1", "1", "12", "13"]
