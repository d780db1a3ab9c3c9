"""DDP habits on DistributedOptimizer across ranks (2 and 4): an enabled GradScaler that
finds an inf on one rank only is refused on every rank (no hang, nothing moves);
clip_grad_norm_ clips ĝ^t, the same on every rank, so the models stay identical; the metric
helpers. Results are gathered before asserting so a failing check cannot block another rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from decomp.algorithms import EF21, GD
from decomp.compress import TopK
from decomp.errors import ConfigError
from decomp.torch import DistributedOptimizer, compat

pytestmark = pytest.mark.mpi(min_size=2)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _loss(model: nn.Module, rank: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * step + rank)  # each rank its own minibatch
    x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    return nn.functional.cross_entropy(model(x), y)


def _backward(model: nn.Module, rank: int, step: int, scale: float = 1.0) -> None:
    (_loss(model, rank, step) * scale).backward()


def test_grad_scaler_with_an_inf_on_one_rank_is_refused_on_every_rank(comm) -> None:
    rank = comm.Get_rank()
    model = _net()
    opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model,
                               EF21(TopK(ratio=0.5)), comm=comm)
    scaler = torch.amp.GradScaler("cpu")
    x = opt.flat.params.copy()
    opt.zero_grad()
    scaler.scale(_loss(model, rank, 0)).backward()
    if rank == 1:
        opt.flat.grads[3] = np.inf  # this rank's scaler alone would skip its step
    try:
        scaler.step(opt)
        outcome = "stepped"
    except ConfigError as e:
        outcome = str(e)
    outcomes = comm.allgather(outcome)  # reached by every rank: nobody blocked in the step
    moved = comm.allgather(bool(not np.array_equal(opt.flat.params, x) or opt.steps))
    assert len(set(outcomes)) == 1 and "does not support torch.amp.GradScaler" in outcomes[0]
    assert not any(moved)


@pytest.mark.parametrize("case", ["ef21", "gd"])
def test_clip_grad_norm_applies_the_same_clipped_estimator_on_every_rank(comm, case: str) -> None:
    rank, n = comm.Get_rank(), comm.Get_size()
    model = _net()
    alg = EF21(TopK(ratio=0.25)) if case == "ef21" else GD()
    opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=1.0), model, alg, comm=comm)
    norms, applied, locals_ = [], [], []
    for k in range(3):
        opt.zero_grad()
        _backward(model, rank, k, scale=50.0)
        locals_.append(opt.flat.grads.copy())
        before = opt.flat.params.copy()
        norms.append(float(opt.clip_grad_norm_(0.5)))
        applied.append(opt.flat.grads.copy())
        opt.step()
        applied[-1] = (applied[-1], np.abs(before - opt.flat.params - applied[-1]).max())
    every = comm.allgather((norms, [a for a, _ in applied], opt.flat.params.copy(), locals_))
    for r in range(n):
        r_norms, r_applied, r_params, _ = every[r]
        assert r_norms == every[0][0]  # the norm of ĝ^t, the same everywhere
        assert all(np.array_equal(a, b) for a, b in zip(r_applied, every[0][1], strict=True))
        assert np.array_equal(r_params, every[0][2])  # the models stay identical
    for g, err in applied:
        assert np.linalg.norm(g) == pytest.approx(0.5, rel=1e-5) and err <= 1e-6
    assert all(nm > 0.5 for nm in norms)
    # the clipped direction is ĝ's, not this rank's local gradient
    assert not np.allclose(applied[0][0] / 0.5, locals_[0] / np.linalg.norm(locals_[0]))


def test_metric_helpers(comm) -> None:
    rank, n = comm.Get_rank(), comm.Get_size()
    assert compat.rank(comm) == rank and compat.world_size(comm) == n
    compat.barrier(comm)
    t = torch.tensor([float(rank), 1.0])
    compat.all_reduce(t, "mean", comm)
    m = torch.tensor(rank, dtype=torch.int32)
    compat.all_reduce(m, "max", comm)
    got = comm.allgather((t.tolist(), int(m), m.dtype))
    assert all(g == ([(n - 1) / 2, 1.0], n - 1, torch.int32) for g in got)


def test_distributed_sampler_splits_the_data_iid_over_the_mpi_ranks(comm) -> None:
    """decomp.torch.distributed_sampler(ds, opt) is torch's DistributedSampler with the MPI
    world: disjoint shards covering every row, the same length on every rank (so the same
    number of steps), reshuffled by set_epoch; the helpers take the optimizer as comm."""
    from torch.utils.data import DistributedSampler, TensorDataset

    from decomp.torch import distributed_sampler

    rank, n = comm.Get_rank(), comm.Get_size()
    model = _net()
    opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, GD(),
                               comm=comm)
    ds = TensorDataset(torch.arange(103.0))  # not a multiple of n: padded as torch does
    got = []
    for epoch in (0, 1):
        s = distributed_sampler(ds, opt, seed=7)
        s.set_epoch(epoch)
        ref = DistributedSampler(ds, num_replicas=n, rank=rank, seed=7)
        ref.set_epoch(epoch)
        got.append((list(s), list(ref)))
    shards = comm.allgather(got)
    helpers = comm.allgather((compat.rank(opt), compat.world_size(opt)))
    refused = None
    try:
        distributed_sampler(ds, opt, rank=0)
    except ConfigError as e:
        refused = str(e)
    assert helpers == [(r, n) for r in range(n)]
    assert refused is not None and "sets rank from MPI" in refused
    for epoch in (0, 1):
        mine = [sh[epoch][0] for sh in shards]
        assert all(sh[epoch][0] == sh[epoch][1] for sh in shards)  # = torch's, given n, rank
        assert len({len(m) for m in mine}) == 1 and len(mine[0]) == -(-103 // n)
        assert set().union(*map(set, mine)) == set(range(103))
        if 103 % n == 0:
            assert sum(len(m) for m in mine) == 103
    assert shards[0][0][0] != shards[0][1][0]  # set_epoch reshuffles
