"""decomp.torch.buckets on one process (MPI.COMM_SELF): the bucket plan (reverse registration
order, contiguous slices, the cap and its scaled default), the option checks with their
messages, and the hooks posting buckets during backward. Iterates against the blocking path at
2 and 4 ranks: tests/mpi/test_torch_overlap.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from decomp.algorithms import CHOCOSGD, EF, EF21, GD, SGDM, AllreduceSGD
from decomp.compress import PerTensor, TopK
from decomp.errors import ConfigError
from decomp.torch import DistributedOptimizer, FlatModel
from decomp.torch.buckets import DDP_CAP_MB, cap_bytes, plan


@pytest.fixture(scope="module")
def comm():
    from mpi4py import MPI

    return MPI.COMM_SELF


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def _backward(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    nn.functional.cross_entropy(model(x), y).backward()


def test_plan_is_reverse_order_contiguous_and_closes_at_the_cap() -> None:
    flat = FlatModel(_net())  # tensors: 48, 8, 64, 8, 24, 3 floats
    sizes = [s.size for s in flat.slots]
    for cap in (1, 4 * 30, 4 * 70, 4 * 1000):
        bks = plan(flat, cap)
        order = [i for b in bks for i in b.params]
        assert order == list(reversed(range(len(sizes))))  # every tensor once, last first
        assert bks[0].hi == flat.d and bks[-1].lo == 0
        for a, b in zip(bks, bks[1:], strict=False):
            assert b.hi == a.lo  # contiguous, descending
        for b in bks[:-1]:  # closed as soon as it held cap bytes: not one tensor earlier
            assert 4 * (b.hi - b.lo) >= cap > 4 * (b.hi - b.lo - sizes[b.params[-1]])
    assert len(plan(flat, 1)) == len(sizes) and len(plan(flat, 4 * 1000)) == 1
    assert [b.params for b in plan(flat, 4 * 30)] == [(5, 4, 3), (2,), (1, 0)]


def test_cap_default_is_ddps_scaled_to_the_model() -> None:
    assert cap_bytes(1000, 4, None) == 1000  # a quarter of the gradient bytes
    assert cap_bytes(10**9, 4, None) == int(DDP_CAP_MB * 2**20)  # DDP's 25 MiB for big models
    assert cap_bytes(10, 4, 2.0) == 2 * 2**20


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "25", True])
def test_bad_bucket_cap_is_refused_with_the_fix(comm, bad) -> None:
    with pytest.raises(ConfigError, match="bucket_cap_mb must be a positive number of MiB"):
        DistributedOptimizer(None, _net(), GD(lr=0.1), comm=comm, overlap=True,
                             bucket_cap_mb=bad)


def test_option_combinations_are_refused_with_the_cause(comm) -> None:
    with pytest.raises(ConfigError, match="pass overlap=True too"):
        DistributedOptimizer(None, _net(), GD(lr=0.1), comm=comm, bucket_cap_mb=1.0)
    with pytest.raises(ConfigError, match="overlap must be True or False"):
        DistributedOptimizer(None, _net(), GD(lr=0.1), comm=comm, overlap="yes")  # type: ignore
    for alg, why in ((EF21(TopK(ratio=0.5), lr=0.1), "give a per-tensor compressor"),
                     (EF21(PerTensor(TopK(ratio=0.5)), lr=0.1, init="full"), None),
                     (EF(PerTensor(TopK(ratio=0.5)), lr=0.1), "needs the whole gradient")):
        if why is None:  # supported: EF21 with a per-tensor compressor
            assert DistributedOptimizer(None, _net(), alg, comm=comm, overlap=True).buckets
            continue
        with pytest.raises(ConfigError, match=why):
            DistributedOptimizer(None, _net(), alg, comm=comm, overlap=True)
    with pytest.raises(ConfigError, match="use aggregation='gather' with overlap=True"):
        DistributedOptimizer(None, _net(), EF21(PerTensor(TopK(ratio=0.5)), lr=0.1),
                             comm=comm, overlap=True, aggregation="tree")
    model = _net()
    with pytest.raises(ConfigError, match="torch optimizer's update"):
        DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model,
                             AllreduceSGD(), comm=comm, overlap=True)
    with pytest.raises(ConfigError, match="drop overlap=True"):
        DistributedOptimizer(None, _net(), CHOCOSGD(TopK(ratio=0.5), consensus_step=0.5,
                                                    lr=0.1),
                             comm=comm, overlap=True, topology="ring")


@pytest.mark.parametrize("make", [lambda: GD(lr=0.1), lambda: SGDM(momentum=0.9, lr=0.1)])
def test_backward_posts_every_bucket_and_step_equals_the_blocking_path(comm, make) -> None:
    ref = DistributedOptimizer(None, _net(), make(), comm=comm)
    opt = DistributedOptimizer(None, _net(), make(), comm=comm, overlap=True,
                               bucket_cap_mb=1e-6)
    for _ in range(3):
        for o in (ref, opt):
            o.zero_grad()
            _backward(o.model)
        assert opt.buckets.posted == len(opt.buckets.buckets) == 6  # before step()
        ref.step()
        opt.step()
        assert opt.buckets.posted == 0
    assert np.array_equal(ref.flat.params, opt.flat.params)
    assert ref.bytes.up == opt.bytes.up and ref.bytes.down == opt.bytes.down


def test_no_sync_posts_nothing_and_set_to_none_grads_are_reattached(comm) -> None:
    model = _net()
    opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, GD(),
                               comm=comm, overlap=True, bucket_cap_mb=1e-6)
    model.zero_grad(set_to_none=True)  # torch's default: .grad detached from the buffer
    with opt.no_sync():
        _backward(model)
    assert opt.buckets.posted == 0
    _backward(model)
    assert opt.buckets.posted == 6
    for p, s in zip(opt.flat.parameters(), opt.flat.slots, strict=True):
        assert p.grad.data_ptr() == opt.flat.grads[s.offset:].ctypes.data  # in the buffer
    opt.step()


def test_wrapping_the_model_again_removes_the_earlier_hooks(comm) -> None:
    model = _net()
    first = DistributedOptimizer(None, model, GD(lr=0.1), comm=comm, overlap=True)
    second = DistributedOptimizer(None, model, GD(lr=0.1), comm=comm)  # no overlap now
    second.zero_grad()
    _backward(model)
    assert first.buckets.posted == 0 and not first.buckets._handles
    assert all(p.grad.data_ptr() == second.flat.grads[s.offset:].ctypes.data
               for p, s in zip(second.flat.parameters(), second.flat.slots, strict=True))
    second.step()


def test_run_overlap_options_are_checked_up_front() -> None:
    """``[run] overlap`` / ``bucket_cap_mb`` in a config: refused with the cause before
    anything runs (decomp.config.checks)."""
    from decomp.config import load_config

    def cfg(run: dict, methods: list | None = None, kind: str = "torch") -> None:
        problem = ({"kind": "torch", "model": "mlp", "dataset": "synthetic"} if kind == "torch"
                   else {"kind": "logistic", "dataset": "synthetic"})
        load_config({"name": "x", "problem": problem, "run": run,
                     "methods": methods or [{"algorithm": "sgd", "lr": 0.1, "batch_size": 4}]})

    cfg({"overlap": True, "bucket_cap_mb": 1.0})  # accepted
    for run, methods, kind, match in (
            ({"bucket_cap_mb": 1.0}, None, "torch", "set overlap = true too"),
            ({"overlap": True, "bucket_cap_mb": -1}, None, "torch", "positive number of MiB"),
            ({"overlap": True}, None, "numpy", "numpy one"),
            ({"overlap": True, "master": "dedicated"}, None, "torch", "master = 'shared'"),
            ({"overlap": True}, [{"algorithm": "choco_sgd", "lr": 0.1, "batch_size": 4,
                                  "compressor": {"kind": "topk", "ratio": 0.1}}], "torch",
             "cannot overlap 'choco_sgd'")):
        with pytest.raises(ConfigError, match=match):
            cfg(run, methods, kind)
