"""The small torch problem shared by the MPI torch tests: a 10-16-3 MLP (optionally with
BatchNorm) on a synthetic 3-class set, iid shards, fixed seeds."""

from __future__ import annotations

import torch
from torch import nn

from decomp.data.classification import load, partition
from decomp.torch import make_torch_problems

SEED = 5


def net(bn: bool) -> nn.Module:
    torch.manual_seed(0)
    mid: list[nn.Module] = [nn.BatchNorm1d(16)] if bn else []
    return nn.Sequential(nn.Linear(10, 16), *mid, nn.ReLU(), nn.Linear(16, 3))


def problems(n: int, bn: bool) -> list:
    """One TorchProblem per worker (n workers), each with its own copy of ``net(bn)``."""
    ds = load("synthetic", n_samples=240, n_features=10, n_classes=3)
    parts = partition(ds.y, n, "iid", seed=SEED)
    return make_torch_problems(net(bn), nn.CrossEntropyLoss(), ds.X, ds.y, parts, seed=SEED)


class LossRecorder:
    """Wraps a TorchProblem for a reference run and records the loss of every minibatch
    gradient (``losses``, in call order), i.e. what the Trainer's training-loss column
    averages over workers and steps."""

    def __init__(self, problem) -> None:
        self._p, self.losses = problem, []

    def __getattr__(self, name: str):
        return getattr(self._p, name)

    def minibatch_grad(self, x, rows):
        g = self._p.minibatch_grad(x, rows)
        self.losses.append(self._p.last_loss)
        return g


def reference_train_loss(recorders: list[LossRecorder], steps: range) -> float:
    """Mean minibatch loss over workers and the given steps (1-based), as the Trainer logs."""
    return sum(r.losses[t - 1] for r in recorders for t in steps) / (len(recorders) *
                                                                      len(steps))
