"""MasterWorker transport: variable-size Gatherv, Bcast, Allreduce and byte counts."""

from __future__ import annotations

import numpy as np
import pytest

from decomp.comm import MasterWorker
from decomp.errors import LaunchError, PayloadError


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("master", ["shared", "dedicated"])
def test_gather_variable_sizes_in_worker_order(any_comm, master: str) -> None:
    comm = any_comm
    tp = MasterWorker(comm, master)
    payload = None
    if tp.is_worker:
        payload = np.full(3 * tp.worker + 1, tp.worker + 7, dtype=np.uint8)
    got = tp.gather(payload)
    if tp.is_master:
        assert len(got) == tp.n_workers
        for i, p in enumerate(got):
            np.testing.assert_array_equal(p, np.full(3 * i + 1, i + 7, dtype=np.uint8))
    else:
        assert got is None
    assert tp.bytes.up == (payload.size if payload is not None else 0)
    assert tp.bytes.control == 8


@pytest.mark.mpi(min_size=2)
def test_broadcast_and_allreduce_counts(any_comm) -> None:
    comm = any_comm
    tp = MasterWorker(comm)
    x = np.arange(10.0) if tp.is_master else np.zeros(10)
    tp.broadcast(x)
    np.testing.assert_array_equal(x, np.arange(10.0))
    assert tp.bytes.down == (0 if tp.is_master else 80)
    v = np.full(4, float(comm.rank))
    tp.allreduce_sum(v)
    np.testing.assert_array_equal(v, np.full(4, sum(range(comm.size)), dtype=float))
    assert tp.bytes.up == 32


@pytest.mark.mpi(min_size=2)
def test_gather_refuses_non_byte_payloads(comm) -> None:
    tp = MasterWorker(comm)
    with pytest.raises(PayloadError, match="uint8"):
        tp.gather(np.zeros(3))  # checked before any communication, so no rank is left waiting


def test_dedicated_master_needs_two_ranks() -> None:
    from mpi4py import MPI

    with pytest.raises(LaunchError, match="at least 2"):
        MasterWorker(MPI.COMM_SELF, "dedicated")


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("master", ["shared", "dedicated"])
def test_fixed_size_gather_skips_the_sizes_round(any_comm, master: str) -> None:
    tp = MasterWorker(any_comm, master)
    for step in range(3):
        payload = None
        if tp.is_worker:
            payload = np.full(40, tp.worker + step, dtype=np.uint8)
        tp.gather_start(payload, 40)  # posted: the worker may work before the wait
        got = tp.gather_finish()
        if tp.is_master:
            assert [int(p[0]) for p in got] == [w + step for w in range(tp.n_workers)]
            assert all(p.size == 40 for p in got)
    assert tp.bytes.control == 0
    assert tp.bytes.up == (120 if tp.is_worker else 0)
    if tp.is_worker:
        from decomp.errors import PayloadError

        with pytest.raises(PayloadError, match="fixed at 41 bytes"):
            tp.gather(np.zeros(40, np.uint8), 41)


@pytest.mark.mpi(min_size=2)
def test_broadcast_bytes_of_changing_sizes(any_comm) -> None:
    """One Bcast while the size stays near the previous one, a second for a longer payload;
    every size arrives intact and is counted once per receiver."""
    tp = MasterWorker(any_comm)
    sizes = [10, 12, 3000, 2900, 0, 200_000, 5, 3 << 20]
    total = 0
    for i, n in enumerate(sizes):
        p = (np.arange(n) % 251 + i).astype(np.uint8) if tp.is_master else None
        got = tp.broadcast_bytes(p)
        assert got.size == n and np.array_equal(got, (np.arange(n) % 251 + i).astype(np.uint8))
        total += n
    assert tp.bytes.down == (0 if tp.is_master else total)
