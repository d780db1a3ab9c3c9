"""``find_unused_parameters=True`` only takes the gradient away from a parameter that got
none on any rank: every parameter that did get one is stepped by the wrapped optimizer exactly
as without the option (bit for bit, the same steps), for a master–worker method whose
aggregate comes back to the optimizer ("update", GD, and "estimator", EF21). On one process
(MPI.COMM_SELF); a parameter used on one rank only: tests/mpi/test_torch_optimizer.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from decomp.algorithms import EF21, GD
from decomp.compress import TopK
from decomp.torch import DistributedOptimizer


def _train(make, find: bool) -> tuple[nn.Module, DistributedOptimizer]:
    from mpi4py import MPI

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    model.add_module("extra", nn.Linear(2, 2))  # never used in forward
    opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                               model, make(), comm=MPI.COMM_SELF,
                               find_unused_parameters=find)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model[2](model[1](model[0](x))), y).backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("make", [GD, lambda: EF21(TopK(ratio=0.5))], ids=["gd", "ef21"])
def test_the_used_parameters_are_stepped_as_without_the_option(make) -> None:
    plain, _ = _train(make, find=False)
    found, _ = _train(make, find=True)
    torch.manual_seed(0)
    start = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
        a, b = plain.get_parameter(name), found.get_parameter(name)
        assert torch.equal(a, b), name
        assert b.grad is not None, name
        assert not torch.equal(b, start.get_parameter(name)), name  # it did move
    assert found.extra.weight.grad is None and plain.extra.weight.grad is not None
