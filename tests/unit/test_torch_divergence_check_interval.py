"""A decentralized DistributedOptimizer checks for divergence collectively every
``check_every`` step() calls — on every such multiple, for the whole run, and not in between
(decomp/torch/optimizer.py): a node that goes non-finite at step 5 is reported by the check
of step 6 with ``check_every`` 2 or 3 (not at step 5, not never), naming the step it went bad
at. One node on COMM_SELF; the same collective over MPI: tests/mpi/test_torch_optimizer.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from decomp.algorithms import CHOCOSGD
from decomp.compress import TopK
from decomp.errors import DivergenceError
from decomp.torch import DistributedOptimizer


@pytest.mark.parametrize("check_every", [2, 3])
def test_a_node_gone_non_finite_is_reported_at_the_next_multiple_of_check_every(
        check_every: int) -> None:
    from mpi4py import MPI

    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = DistributedOptimizer(None, model, CHOCOSGD(TopK(ratio=0.5), consensus_step=0.5),
                               lr=0.1, comm=MPI.COMM_SELF, check_every=check_every)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    raised_at = None
    for step in range(1, 10):
        opt.zero_grad()
        model(x).square().mean().backward()
        if step == 5:
            model.weight.grad[0, 0] = float("nan")
        try:
            opt.step()
        except DivergenceError as e:
            raised_at = step
            assert "non-finite value at step 5 (found by the collective check at step 6)" \
                in str(e), str(e)
            break
    assert raised_at == 6
