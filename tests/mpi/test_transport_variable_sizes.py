"""The master–worker transport follows payload sizes that change: a gather lays out again
whenever the sizes change, and a broadcast of a repeated size takes one Bcast. Written for
gaps mutation testing found (docs/testing.md, "Mutation testing")."""

from __future__ import annotations

import numpy as np
import pytest

from decomp.comm import MasterWorker


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("master", ["shared", "dedicated"])
def test_gather_lays_out_again_whenever_the_sizes_change(comm, master: str) -> None:
    """Variable-size gathers whose sizes grow, shrink and grow again: every round the master
    gets each worker's payload exactly (the cached receive views are reused only for the very
    same sizes, never for larger or lexicographically greater ones)."""
    tp = MasterWorker(comm, master)
    for rnd, (a, b) in enumerate([(1, 1), (4, 3), (4, 5), (2, 0), (9, 2), (9, 2)]):
        payload = None
        if tp.is_worker:
            payload = np.full(a + b * tp.worker, 10 * rnd + tp.worker, dtype=np.uint8)
        got = tp.gather(payload)
        if tp.is_master:
            assert [p.tolist() for p in got] == [[10 * rnd + w] * (a + b * w)
                                                 for w in range(tp.n_workers)]


class _CountingComm:
    """The communicator with its Bcast calls counted."""

    def __init__(self, comm) -> None:  # noqa: ANN001
        self._comm, self.bcasts = comm, 0

    def Bcast(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201, N802
        self.bcasts += 1
        return self._comm.Bcast(*args, **kwargs)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._comm, name)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("size", [1, 80, 1000, 5000])
def test_broadcast_bytes_of_a_repeated_size_takes_one_bcast(comm, size: int) -> None:
    """``broadcast_bytes`` sizes its first Bcast from the previous payload (with headroom), so
    a payload of the same size as the last one arrives in a single Bcast on every rank, with
    the same bytes."""
    tp = MasterWorker(comm)
    counting = _CountingComm(comm)
    tp.comm = counting
    data = (np.arange(size) % 251).astype(np.uint8)
    for _ in range(2):
        before = counting.bcasts
        got = tp.broadcast_bytes(data if tp.is_master else None)
        assert np.array_equal(got, data)
    assert counting.bcasts - before == 1
