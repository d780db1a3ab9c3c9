"""Your own 1-D CNN on MNIST-1D, decentralized: every rank a node of a ring, local momentum SGD
with a cosine LR schedule, CHOCO-SGD's compressed gossip (Top-k) mixing the models.

    mpiexec -n 4 python examples/mnist1d_cnn_choco.py --steps 300

Each step, on node i: the wrapped torch optimizer takes the local step x_i' = x_i + Δ_i
(momentum SGD at the scheduled lr); CHOCO-SGD then sends q_i = C(x_i' − x̂_i) (Top-k: k values
and indices) to its two ring neighbours, every holder updates the replica x̂_i += q_i, and
x_i ← x_i' + γ_c Σ_j W_ij (x̂_j − x̂_i). Models differ per node; rank 0 reports the averaged
model x̄ = (1/n) Σ_i x_i (``opt.averaged()``) and the nodes' own accuracies.
MNIST-1D is generated offline by the ``mnist1d`` package (decomp.datasets.load).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from mpi4py import MPI
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import decomp
from decomp.algorithms import CHOCOSGD
from decomp.compress import TopK
from decomp.launch import configure_threads
from decomp.torch import DistributedOptimizer, ShardSampler


class CNN1D(nn.Module):
    """Three strided 1-D convolutions (25 channels) and a linear classifier: d = 5,210."""

    def __init__(self, channels: int = 25, n_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(channels * 5, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 40)
        return self.head(self.conv(x.unsqueeze(1)).flatten(1))


def forever(loader: DataLoader, sampler: ShardSampler):
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


@torch.no_grad()
def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    acc = float((model(X).argmax(1) == y).float().mean())
    model.train()
    return acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.2, help="peak lr of the cosine schedule")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--ratio", type=float, default=0.05, help="Top-k: k / d")
    p.add_argument("--consensus-step", type=float, default=0.2, help="CHOCO consensus step size")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    comm = MPI.COMM_WORLD
    configure_threads(comm)

    data = decomp.datasets.load("mnist1d")  # 4000 train / 1000 test, 40-sample signals
    train = TensorDataset(torch.from_numpy(data.X), torch.from_numpy(data.y))
    X_test, y_test = torch.from_numpy(data.X_test), torch.from_numpy(data.y_test)
    sampler = ShardSampler(train, partition="iid", seed=a.seed)
    loader = DataLoader(train, batch_size=a.batch_size, sampler=sampler, drop_last=True)
    torch.manual_seed(a.seed)
    model = CNN1D()
    local = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
    alg = CHOCOSGD(TopK(ratio=a.ratio), consensus_step=a.consensus_step)
    opt = DistributedOptimizer(local, model, alg, topology="ring", seed=a.seed)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.steps)
    loss_fn = nn.CrossEntropyLoss()
    batches = forever(loader, sampler)
    t0 = time.perf_counter()
    for step in range(1, a.steps + 1):
        x, y = next(batches)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        if comm.rank == 0 and step % max(1, a.steps // 5) == 0:
            print(f"step {step}: node-0 minibatch loss {float(loss):.4f}, lr "
                  f"{sched.get_last_lr()[0]:.4f}", flush=True)
    wall = time.perf_counter() - t0
    opt.check_divergence()
    own = comm.allgather(accuracy(model, X_test, y_test))  # every node's own x_i
    with opt.averaged():
        acc_bar = accuracy(model, X_test, y_test)
    traffic = opt.traffic()
    if comm.rank == 0:
        print(f"final: CHOCO-SGD Top-{a.ratio:g} (consensus_step {a.consensus_step:g}) + "
              f"momentum SGD, cosine lr, ring of {comm.size}, {a.steps} steps: test_acc(xbar) "
              f"{acc_bar:.4f}, nodes "
              f"mean {np.mean(own):.4f} min {min(own):.4f}, sent "
              f"{traffic['sent'] / 1e6:.6f} MB/rank, received "
              f"{traffic['received'] / 1e6:.6f} MB/rank, {wall:.1f} s", flush=True)


if __name__ == "__main__":
    main()
