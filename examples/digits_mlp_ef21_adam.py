"""Your own MLP on scikit-learn's digits, your own loop and Adam, with EF21 + Top-1 % across
MPI ranks (decomp.torch.DistributedOptimizer).

    mpiexec -n 4 python examples/digits_mlp_ef21_adam.py --steps 300
    mpiexec -n 4 python examples/digits_mlp_ef21_adam.py --steps 300 --ddp   # DDP + Adam (gloo)

Every rank reads only its shard (decomp.torch.ShardSampler, iid) through an ordinary
DataLoader. Before Adam steps, the wrapped optimizer replaces every gradient with EF21's
estimator g^t = (1/n) Σ_i g_i^t (the same on every rank), built from Top-k compressed
differences C(∇f_i(x^t; ξ) − g_i^{t−1}): each worker sends k = 1 % of d values + indices per
step. ``--ddp`` trains the same model with torch DistributedDataParallel (gloo, dense
all-reduce of the gradients) for comparison; its bytes are counted by a communication hook.
Rank 0 prints ``final: ...`` with the test accuracy and the bytes each rank sent.
"""

from __future__ import annotations

import argparse
import socket
import time

import numpy as np
import torch
from mpi4py import MPI
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from decomp.algorithms import EF21
from decomp.compress import TopK
from decomp.launch import configure_threads
from decomp.torch import DistributedOptimizer, ShardSampler


def data(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Digits (1797 8×8 images, pixels / 16), a seeded 80/20 split: the same on every rank."""
    X, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(y))
    X = torch.tensor(X[perm] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[perm], dtype=torch.int64)
    cut = int(0.8 * len(y))
    return TensorDataset(X[:cut], y[:cut]), TensorDataset(X[cut:], y[cut:])


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def forever(loader: DataLoader, sampler: ShardSampler):
    """Batches epoch after epoch (a new shard order each epoch)."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


@torch.no_grad()
def accuracy(model: nn.Module, ds: TensorDataset) -> float:
    model.eval()
    X, y = ds.tensors
    acc = float((model(X).argmax(1) == y).float().mean())
    model.train()
    return acc


def ddp_wrap(model: nn.Module, comm: MPI.Comm) -> tuple[nn.Module, list[int]]:
    """torch DDP over gloo in the same MPI processes; a hook counts the bytes each rank puts
    into the all-reduce (its d float32 gradient values per step, as decomp counts GD's)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    port = None
    if comm.rank == 0:  # a free TCP port for gloo's rendezvous, chosen by the OS
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    port = comm.bcast(port)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=comm.rank,
                            world_size=comm.size)
    sent = [0]

    def hook(state, bucket):
        buf = bucket.buffer()
        sent[0] += buf.numel() * buf.element_size()
        buf.div_(dist.get_world_size())
        return dist.all_reduce(buf, async_op=True).get_future().then(lambda f: f.value()[0])

    ddp = DistributedDataParallel(model)
    ddp.register_comm_hook(None, hook)
    return ddp, sent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--ratio", type=float, default=0.01, help="Top-k: k / d")
    p.add_argument("--ddp", action="store_true", help="torch DDP (gloo) + Adam instead")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    comm = MPI.COMM_WORLD
    configure_threads(comm)  # one torch thread per rank when ranks share the cores

    train, test = data(a.seed)
    sampler = ShardSampler(train, partition="iid", seed=a.seed)  # this rank's rows only
    loader = DataLoader(train, batch_size=a.batch_size, sampler=sampler, drop_last=True)
    model = mlp(a.seed)
    loss_fn = nn.CrossEntropyLoss()
    if a.ddp:
        net, sent = ddp_wrap(model, comm)
        opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    else:
        net = model
        opt = DistributedOptimizer(torch.optim.Adam(model.parameters(), lr=a.lr), model,
                                   EF21(TopK(ratio=a.ratio)), seed=a.seed)
    batches = forever(loader, sampler)
    t0 = time.perf_counter()
    for step in range(1, a.steps + 1):
        x, y = next(batches)
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        if comm.rank == 0 and step % max(1, a.steps // 5) == 0:
            print(f"step {step}: minibatch loss {float(loss):.4f}", flush=True)
    wall = time.perf_counter() - t0
    acc = accuracy(model, test)
    if a.ddp:  # each rank contributes its d gradient values and receives the d-value sum
        bytes_sent = bytes_received = comm.allreduce(sent[0]) / comm.size
        what = "DDP+Adam (gloo all-reduce)"
    else:  # payloads up to the master; the compressed sum (union of Top-k sets) back down
        traffic = opt.traffic()
        bytes_sent, bytes_received = traffic["sent"], traffic["received"]
        what = f"EF21 Top-{a.ratio:g} + Adam"
    d = sum(p.numel() for p in model.parameters())
    if comm.rank == 0:
        print(f"final: {what}, {comm.size} ranks, {a.steps} steps, d={d}: test_acc "
              f"{acc:.4f}, sent {bytes_sent / 1e6:.6f} MB/rank, received "
              f"{bytes_received / 1e6:.6f} MB/rank, {wall:.1f} s", flush=True)
    if a.ddp:
        import torch.distributed as dist

        dist.destroy_process_group()


if __name__ == "__main__":
    main()
