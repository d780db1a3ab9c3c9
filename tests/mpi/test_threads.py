"""Threads per rank under MPI: with no thread variable set, a rank's pools (torch intra-op,
BLAS/OpenMP through threadpoolctl, numba) get max(1, cores // ranks on this node), the rule
computed here independently (ranks counted by host name, cores from the affinity mask), through
``configure_threads`` and through ``DistributedOptimizer``. Torch's inter-op pool can be set
only once per process, so it is checked in fresh ranks: `decomp info` under mpiexec, in
tests/e2e/test_threads_info.py. Each test restores the process's pools and variables."""

from __future__ import annotations

import os

import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits
from torch import nn

from decomp.threads import THREAD_VARS, configure_threads


def rule(comm) -> int:
    from mpi4py import MPI

    name = MPI.Get_processor_name()
    return max(1, len(os.sched_getaffinity(0)) // comm.allgather(name).count(name))


@pytest.fixture
def no_thread_vars(monkeypatch):
    """No thread variable in the environment (as a user's shell); everything restored after."""
    import numba

    before = torch.get_num_threads(), numba.get_num_threads()
    for name in THREAD_VARS:
        monkeypatch.delenv(name, raising=False)
    with threadpool_limits(limits=None):
        yield
    torch.set_num_threads(before[0])
    numba.set_num_threads(before[1])
    for name in THREAD_VARS:  # configure_threads wrote them: monkeypatch restores the old ones
        monkeypatch.delenv(name, raising=False)


def effective() -> tuple[int, set[int], int, str | None]:
    """(torch intra-op, BLAS/OpenMP pool sizes, numba, OMP_NUM_THREADS) of this process now."""
    import numba

    return (torch.get_num_threads(), {p["num_threads"] for p in threadpool_info()},
            numba.get_num_threads(), os.environ.get("OMP_NUM_THREADS"))


def numba_rule(want: int) -> int:
    """numba's pool was started by earlier tests: it can only use up to its size."""
    import numba

    return min(want, numba.config.NUMBA_NUM_THREADS)


def test_configure_threads_gives_every_pool_cores_over_ranks_on_the_node(comm, no_thread_vars):
    want = rule(comm)
    torch.set_num_threads(want + 1)  # a pool that had other sizes
    got = configure_threads(comm)
    everyone = comm.allgather((got, effective()))
    assert everyone == [(want, (want, {want}, numba_rule(want), str(want)))] * comm.Get_size()


@pytest.mark.mpi(min_size=2)
def test_a_distributed_optimizer_sets_the_threads_of_its_rank(comm, no_thread_vars) -> None:
    from decomp.algorithms import EF21
    from decomp.compress import TopK
    from decomp.torch import DistributedOptimizer

    want = rule(comm)
    torch.set_num_threads(want + 1)
    model = nn.Linear(3, 2)
    DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model,
                         EF21(TopK(ratio=0.5)), comm=comm)
    everyone = comm.allgather(effective())
    assert everyone == [(want, {want}, numba_rule(want), str(want))] * comm.Get_size()
