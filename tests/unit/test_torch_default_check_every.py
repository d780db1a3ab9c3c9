"""A decentralized DistributedOptimizer's collective divergence check runs every 50 step()
calls by default (``check_every=50``, the documented default of docs/torch.md): a node gone
non-finite at step 1 is reported by the check of step 50 — not before, not at 51. One node on
COMM_SELF (the interval itself, any value: test_torch_divergence_check_interval.py)."""

from __future__ import annotations

import torch
from torch import nn

from decomp.algorithms import CHOCOSGD
from decomp.compress import TopK
from decomp.errors import DivergenceError
from decomp.torch import DistributedOptimizer


def test_by_default_a_node_gone_non_finite_is_reported_at_step_50() -> None:
    from mpi4py import MPI

    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = DistributedOptimizer(None, model, CHOCOSGD(TopK(ratio=0.5), consensus_step=0.5),
                               lr=0.1, comm=MPI.COMM_SELF)
    assert opt.check_every == 50
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    raised_at = None
    for step in range(1, 53):
        opt.zero_grad()
        model(x).square().mean().backward()
        if step == 1:
            model.weight.grad[0, 0] = float("nan")
        try:
            opt.step()
        except DivergenceError as e:
            raised_at = step
            assert "non-finite value at step 1 (found by the collective check at step 50)" \
                in str(e), str(e)
            break
    assert raised_at == 50
