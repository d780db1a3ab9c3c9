"""The dataset read once per node (decomp.data.shared): one rank of each shared-memory node
parses, every rank ends with the arrays it would have parsed itself (byte for byte, sparse and
dense), a reading error is raised on every rank with the leader's message, and over a
communicator whose rank order is reversed the node's first rank of that communicator reads."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import decomp.data.shared as shared
from decomp.data.tabular import load_dataset
from decomp.errors import DataError


def _counting(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = shared.load_dataset

    def counted(name, **kw):
        calls.append(name)
        return real(name, **kw)

    monkeypatch.setattr(shared, "load_dataset", counted)
    return calls


def _same(a, b) -> bool:
    if sp.issparse(a):
        return (sp.issparse(b) and a.shape == b.shape and a.dtype == b.dtype
                and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
                and np.array_equal(a.data, b.data))
    return (not sp.issparse(b) and a.dtype == b.dtype and a.shape == b.shape
            and np.array_equal(a, b))


def _check(comm, monkeypatch, name: str, directory, kw) -> None:
    calls = _counting(monkeypatch)
    node = shared.node_comm(comm)
    node_rank = node.Get_rank()
    node.Free()
    ds = shared.load_dataset_once(name, comm, directory=directory, **kw)
    mine = load_dataset(name, directory=directory, **kw)
    ok = _same(ds.A, mine.A) and np.array_equal(ds.b, mine.b) and ds.b.dtype == mine.b.dtype
    everyone = comm.allgather((ok, len(calls), node_rank))
    assert all(o for o, _, _ in everyone), everyone
    assert all(r == (1 if nr == 0 else 0) for _, r, nr in everyone), everyone


@pytest.mark.parametrize("name, kw", [
    ("breast_cancer", {"scale": "standard"}),
    ("synthetic", {"n_samples": 40, "n_features": 7, "seed": 3}),
])
def test_every_rank_holds_the_arrays_read_by_one_rank(any_comm, monkeypatch, name, kw):
    _check(any_comm, monkeypatch, name, None, kw)


def test_a_sparse_libsvm_file_is_read_once(comm, monkeypatch, data_dir):
    """CSR data, indices and indptr, float32 after maxabs scaling."""
    _check(comm, monkeypatch, "a9a", str(data_dir), {"scale": "maxabs", "dtype": "float32"})


def test_a_reading_error_is_raised_on_every_rank(comm, tmp_path_factory):
    missing = "no-such-set-xyz"
    try:
        shared.load_dataset_once(missing, comm, directory=str(tmp_path_factory.mktemp("d")))
        got = ""
    except DataError as e:
        got = str(e)
    everyone = comm.allgather(got)
    assert all(m and "no-such-set-xyz" in m and m == everyone[0] for m in everyone), everyone


def test_one_rank_or_the_switch_off_reads_here(comm, monkeypatch):
    calls = _counting(monkeypatch)
    monkeypatch.setenv(shared.ONCE_ENV, "0")
    shared.load_dataset_once("synthetic", comm, n_samples=10, n_features=3)
    assert calls == ["synthetic"]
    shared.load_dataset_once("synthetic", None, n_samples=10, n_features=3)
    assert calls == ["synthetic", "synthetic"]
