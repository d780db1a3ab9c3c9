"""Least-squares regression on your own tensors, decentralized with DCD-PSGD (8-bit QSGD) on a
ring: MSELoss with float targets, your own loop, the algorithm's own update (no torch
optimizer: ``DistributedOptimizer(None, ...)`` is DCD-PSGD exactly, Tang et al. 2018, Alg. 1).

    mpiexec -n 4 python examples/least_squares_dcd.py --steps 300

The data: A ∈ R^{N×p} with N(0, 1) entries, b = A w* + β* + 0.1·ε (the same on every rank from
the seed); rank i trains on its contiguous shard of the rows (decomp.torch.ShardSampler). Per
step, node i mixes its neighbours' replicas and takes the gradient step,
x_i^{t+1/2} = Σ_j W_ij x̂_j − γ ∇F_i(x_i; ξ), then sends C(x_i^{t+1/2} − x_i) (8-bit QSGD: one
byte per entry) and everyone holding x_i's replica adds it. Rank 0 reports the test MSE of the
averaged model (the noise floor is 0.01) and ‖w − w*‖ / ‖w*‖.
"""

from __future__ import annotations

import argparse
import time

import torch
from mpi4py import MPI
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from decomp.algorithms import DCDPSGD
from decomp.compress import QSGD
from decomp.launch import configure_threads
from decomp.torch import DistributedOptimizer, ShardSampler


def make_data(n: int, p: int, seed: int) -> tuple[torch.Tensor, ...]:
    """(A, b, w*, β*): b = A w* + β* + 0.1 ε, float32."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, p, generator=g)
    w = torch.randn(p, generator=g)
    beta = torch.tensor(0.5)
    b = A @ w + beta + 0.1 * torch.randn(n, generator=g)
    return A, b, w, beta


def forever(loader: DataLoader, sampler: ShardSampler):
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rows", type=int, default=4000)
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--levels", type=int, default=127, help="QSGD levels (127: 8 bits)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    comm = MPI.COMM_WORLD
    configure_threads(comm)

    A, b, w_star, beta = make_data(a.rows, a.features, a.seed)
    cut = int(0.8 * a.rows)
    train = TensorDataset(A[:cut], b[:cut])
    sampler = ShardSampler(train, partition="contiguous", seed=a.seed)
    loader = DataLoader(train, batch_size=a.batch_size, sampler=sampler, drop_last=True)
    model = nn.Sequential(nn.Linear(a.features, 1), nn.Flatten(0))  # (B, p) -> (B,)
    opt = DistributedOptimizer(None, model, DCDPSGD(QSGD(levels=a.levels), lr=a.lr),
                               topology="ring", seed=a.seed)
    loss_fn = nn.MSELoss()
    batches = forever(loader, sampler)
    t0 = time.perf_counter()
    for step in range(1, a.steps + 1):
        x, y = next(batches)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if comm.rank == 0 and step % max(1, a.steps // 5) == 0:
            print(f"step {step}: node-0 minibatch MSE {float(loss):.4f}", flush=True)
    wall = time.perf_counter() - t0
    opt.check_divergence()
    with torch.no_grad(), opt.averaged():
        test_mse = float(loss_fn(model(A[cut:]), b[cut:]))
        w = torch.cat([model[0].weight.flatten(), model[0].bias])
    truth = torch.cat([w_star, beta.reshape(1)])
    rel = float((w - truth).norm() / truth.norm())
    traffic = opt.traffic()
    if comm.rank == 0:
        print(f"final: DCD-PSGD QSGD-{a.levels} levels, ring of {comm.size}, {a.steps} steps, "
              f"lr {a.lr:g}: test_mse(xbar) {test_mse:.5f} (noise floor 0.01), "
              f"rel_error(xbar) {rel:.4f}, sent {traffic['sent'] / 1e6:.6f} MB/rank, received "
              f"{traffic['received'] / 1e6:.6f} MB/rank, {wall:.1f} s", flush=True)


if __name__ == "__main__":
    main()
