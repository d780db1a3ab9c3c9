"""DDP habits on DistributedOptimizer, one process (MPI.COMM_SELF): GradScaler refused in
step() before anything moves, clip_grad_norm_ on what is applied, no_sync, the SyncBatchNorm
warning, and the helpers. Across ranks: tests/mpi/test_torch_compat.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from decomp.algorithms import CHOCOSGD, EF21, GD
from decomp.compress import TopK
from decomp.errors import ConfigError
from decomp.torch import DistributedOptimizer, compat


@pytest.fixture(scope="module")
def comm():
    from mpi4py import MPI

    return MPI.COMM_SELF


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _backward(model: nn.Module, scale: float = 1.0, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    (nn.functional.cross_entropy(model(x), y) * scale).backward()


@pytest.mark.parametrize("unscale_first", [False, True])
def test_an_enabled_grad_scaler_is_refused_in_step_and_nothing_moves(comm,
                                                                     unscale_first: bool) -> None:
    model = _net()
    opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model,
                               EF21(TopK(ratio=0.5)), comm=comm)
    scaler = torch.amp.GradScaler("cpu")
    x = opt.flat.params.copy()
    opt.zero_grad()
    scaler.scale(nn.functional.cross_entropy(model(torch.randn(4, 6)),
                                             torch.tensor([0, 1, 2, 0]))).backward()
    if unscale_first:
        scaler.unscale_(opt)  # the clipping recipe: unscale, clip, step
    with pytest.raises(ConfigError, match="does not support torch.amp.GradScaler.*bfloat16 "
                                          "autocast.*before any collective"):
        scaler.step(opt)
    assert np.array_equal(opt.flat.params, x) and opt.session.state is None and opt.steps == 0
    opt.step()  # without the scaler the same optimizer steps
    assert opt.steps == 1


def test_a_disabled_grad_scaler_steps_as_without_it(comm) -> None:
    model = _net()
    opt = DistributedOptimizer(None, model, GD(lr=0.1), comm=comm)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    opt.zero_grad()
    _backward(model)
    g = opt.flat.grads.copy()
    x = opt.flat.params.copy()
    scaler.step(opt)
    scaler.update()
    assert np.array_equal(opt.flat.params, x - np.float32(0.1) * g)


@pytest.mark.parametrize("case", ["ef21", "gd"])
def test_clip_grad_norm_clips_the_aggregated_gradient_that_step_applies(comm, case: str) -> None:
    model = _net()
    alg = EF21(TopK(ratio=0.25)) if case == "ef21" else GD()
    opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=1.0), model, alg, comm=comm)
    for k in range(3):  # from the second step EF21's estimator differs from the local gradient
        opt.zero_grad()
        _backward(model, scale=50.0, seed=k)
        local = opt.flat.grads.copy()
        x = opt.flat.params.copy()
        norm = opt.clip_grad_norm_(0.5)
        applied = opt.flat.grads.copy()  # ĝ^t clipped
        assert np.linalg.norm(applied) == pytest.approx(0.5, rel=1e-5)
        assert float(norm) > 0.5
        if case == "ef21" and k > 0:
            assert not np.allclose(applied / np.linalg.norm(applied), local / np.linalg.norm(local))
        opt.step()  # only applies: no second aggregation
        np.testing.assert_allclose(opt.flat.params, x - applied, rtol=0, atol=1e-6)
    assert opt.steps == 3


def test_clip_grad_norm_per_node_for_gossip_and_refused_without_an_optimizer(comm) -> None:
    model = _net()
    opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=1.0), model,
                               CHOCOSGD(TopK(ratio=0.5), consensus_step=0.5), comm=comm)
    opt.zero_grad()
    _backward(model, scale=50.0)
    norm = opt.clip_grad_norm_(0.25)
    assert float(norm) > 0.25
    assert np.linalg.norm(opt.flat.grads) == pytest.approx(0.25, rel=1e-5)
    own = DistributedOptimizer(None, _net(), GD(lr=0.1), comm=comm)
    with pytest.raises(ConfigError, match="clip_grad_norm_ needs a wrapped torch optimizer"):
        own.clip_grad_norm_(1.0)


def test_no_sync_is_a_no_op_and_accumulation_sums(comm) -> None:
    model = _net()
    opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, comm=comm)
    opt.zero_grad()
    with opt.no_sync():
        _backward(model, seed=0)
    _backward(model, seed=1)
    both = opt.flat.grads.copy()
    opt.zero_grad()
    _backward(model, seed=0)
    _backward(model, seed=1)
    assert np.array_equal(opt.flat.grads, both) and opt.steps == 0


def test_sync_batchnorm_warns_and_plain_batchnorm_does_not(comm) -> None:
    with pytest.warns(UserWarning, match=r"1 nn.SyncBatchNorm layer\(s\).*opt.averaged\(\)"):
        m = nn.Sequential(nn.Linear(6, 4), nn.SyncBatchNorm(4))
        DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m, comm=comm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4))
        DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m, comm=comm)


def test_helpers_on_one_rank(comm) -> None:
    assert compat.rank(comm) == 0 and compat.world_size(comm) == 1
    compat.barrier(comm)
    t = torch.tensor([1.5, 2.5])
    assert compat.all_reduce(t, "mean", comm) is t and t.tolist() == [1.5, 2.5]
    with pytest.raises(ConfigError, match="op must be"):
        compat.all_reduce(t, "avg", comm)
