"""decomp.torch.buckets.Buckets on one process (MPI.COMM_SELF): the MPI progress mode decides
who moves the buckets in flight during backward, and the printed form states the plan.

- ``progress="hooks"`` (the default) calls ``MPI_Testall`` on the posted buckets from the
  gradient hooks (MPICH moves a message only inside an MPI call); ``progress="none"`` never
  does (posts, then waits in finish()). Both reduce to the same gradient.
- ``repr`` lists every bucket's size and the cap in MiB (4 bytes a float32 gradient entry).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from decomp.torch import FlatModel
from decomp.torch.buckets import Buckets


class _CountingMPI:
    """mpi4py's MPI with Request.Testall counted (every other name is MPI's own)."""

    def __init__(self, mpi) -> None:
        self._mpi = mpi
        self.testall = 0
        counter = self

        class Request:
            @staticmethod
            def Testall(reqs):
                counter.testall += 1
                return mpi.Request.Testall(reqs)

            Waitall = staticmethod(mpi.Request.Waitall)

        self.Request = Request

    def __getattr__(self, name):
        return getattr(self._mpi, name)


def _flat() -> FlatModel:
    torch.manual_seed(0)
    return FlatModel(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)))


def _backward(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    nn.functional.cross_entropy(model(x), y).backward()


@pytest.mark.parametrize("progress", ["hooks", "none"])
def test_only_the_hooks_mode_tests_the_buckets_in_flight_during_backward(progress) -> None:
    from mpi4py import MPI

    flat = _flat()
    b = Buckets(flat, MPI.COMM_SELF, bucket_cap_mb=1e-6, progress=progress)
    mpi = b._MPI = _CountingMPI(MPI)
    try:
        _backward(flat.module)
        assert b.posted == len(b.buckets) == 4  # one bucket per tensor at a 1-byte cap
        # a hook after the first post tests what is in flight: 4 hooks, all after a post
        assert mpi.testall == (4 if progress == "hooks" else 0)
        b.finish()
        assert mpi.testall == (4 if progress == "hooks" else 0)
        expect = np.concatenate([p.grad.detach().numpy().ravel()
                                 for p in flat.module.parameters()])
        assert np.array_equal(flat.grads, expect)  # a sum over one rank: unchanged
    finally:
        b.close()


def test_the_printed_form_states_every_buckets_size_and_the_cap_in_mib() -> None:
    from mpi4py import MPI

    flat = _flat()  # 6·8 + 8 + 8·3 + 3 = 83 floats: 48 + 8 | 24 + 3 in reverse order
    b = Buckets(flat, MPI.COMM_SELF, bucket_cap_mb=100 / 2**20)  # 100 bytes
    try:
        sizes = [4 * (bk.hi - bk.lo) for bk in b.buckets]
        assert sizes == [4 * (24 + 3), 4 * (8 + 48)]  # bytes; each closed at >= 100
        b.cap = 3 * 2**20  # print a cap whose MiB reads exactly
        assert repr(b) == ("Buckets(2 buckets of [0.00, 0.00] MiB, cap 3.00 MiB, "
                           "progress=hooks)")
        big = Buckets(_flat(), MPI.COMM_SELF, bucket_cap_mb=None)
        big.buckets = [type(bk)(0, 2**19, bk.params) for bk in big.buckets[:1]]
        big.cap = 2**21
        assert repr(big) == "Buckets(1 buckets of [2.00] MiB, cap 2.00 MiB, progress=hooks)"
        big.close()
    finally:
        b.close()
