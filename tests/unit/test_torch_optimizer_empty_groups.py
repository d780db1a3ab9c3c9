"""decomp.torch.DistributedOptimizer wraps a torch optimizer created with a parameter group
that holds no parameter yet (``SGD([{"params": []}], lr=...)``, parameters added later with
``add_param_group``), as torch itself allows: the wrapper is built (decomp/torch/optimizer.py
falls back to the model's parameters for torch's own bookkeeping) and, once the group is
added, a step applies the wrapped optimizer's update x ← x − lr·g exactly (one process)."""

from __future__ import annotations

import torch
from torch import nn

from decomp.torch import DistributedOptimizer


def test_an_optimizer_whose_groups_hold_no_parameter_yet_can_be_wrapped() -> None:
    from mpi4py import MPI

    torch.manual_seed(0)
    model = nn.Linear(5, 2)
    sgd = torch.optim.SGD([{"params": []}], lr=0.25)
    opt = DistributedOptimizer(sgd, model, comm=MPI.COMM_SELF)
    opt.add_param_group({"params": list(model.parameters())})
    assert [len(g["params"]) for g in opt.param_groups] == [0, 2]
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    model(x).square().mean().backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    opt.step()
    for p, b, g in zip(model.parameters(), before, grads, strict=True):
        assert torch.equal(p.detach(), b - 0.25 * g)
