"""DistributedOptimizer starts every rank from rank 0's model: what is not in the flat vectors
(frozen parameters, integer buffers) is broadcast from rank 0 — by buffer (``Bcast``) when
the tensor is contiguous and not bfloat16, else pickled (``bcast``: a transposed frozen
weight, a frozen bfloat16 parameter). Played on "rank 1" of a two-rank world by a
communicator stand-in whose broadcasts return the root's tensors (no MPI); the real two-rank
case with float32 frozen layers: tests/mpi/test_torch_optimizer.py."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from decomp.torch import DistributedOptimizer


class _Net(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Linear(3, 2)  # trainable: in the flat vector, not broadcast here
        self.t = nn.Parameter(torch.randn(3, 4).t(), requires_grad=False)  # not contiguous
        self.low = nn.Parameter(torch.randn(5).to(torch.bfloat16), requires_grad=False)
        self.frozen = nn.Parameter(torch.randn(2, 2), requires_grad=False)
        self.register_buffer("count", torch.tensor([seed, 7 * seed]))

    def rest(self) -> list[torch.Tensor]:
        return [self.t, self.low, self.frozen, self.count]


class _WorldOfTwo:
    """Rank 1's communicator: a broadcast from ``root`` returns that rank's tensor."""

    def __init__(self, rank0: _Net, rank1: _Net) -> None:
        self.ranks = [rank0.rest(), rank1.rest()]
        self.calls: list[tuple[str, int]] = []

    def _next(self, root: int) -> torch.Tensor:
        return self.ranks[root][len(self.calls) - 1].detach()

    def Bcast(self, buf, root: int = 0) -> None:
        self.calls.append(("Bcast", root))
        buf[...] = self._next(root).numpy()

    def bcast(self, obj, root: int = 0):
        self.calls.append(("bcast", root))
        return self._next(root).clone()


def test_frozen_parameters_and_integer_buffers_take_rank_0s_values() -> None:
    rank0, mine = _Net(0), _Net(1)
    before = [t.detach().clone() for t in mine.rest()]
    comm = _WorldOfTwo(rank0, mine)
    opt = SimpleNamespace(comm=comm, _flat_ids={id(p) for p in mine.body.parameters()})
    DistributedOptimizer._broadcast_rest(opt, mine)
    assert comm.calls == [("bcast", 0), ("bcast", 0), ("Bcast", 0), ("Bcast", 0)]
    for got, want, old in zip(mine.rest(), rank0.rest(), before, strict=True):
        assert torch.equal(got, want) and not torch.equal(got, old)
    assert mine.low.dtype == torch.bfloat16 and not mine.t.is_contiguous()
