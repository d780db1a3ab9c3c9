"""train_ddp.py ported to decomp: the same training, its gradients compressed by EF21 with
Top-10 % over MPI instead of DDP's dense all-reduce over torch.distributed.

    mpiexec -n 2 python examples/ddp_port/train_decomp.py --epochs 8

Every edit against train_ddp.py is one item of docs/torch.md's "DDP to decomp" checklist:
launch (mpiexec, no process group), the optimizer wrapped instead of the model, clipping with
opt.clip_grad_norm_ (the aggregated gradient), opt.no_sync() (a no-op: accumulation needs
nothing), evaluation under opt.averaged() on every rank, every rank's state saved and loaded
by opt.save / opt.load (collective, one folder), the collective helpers from decomp.torch.
The diff is counted in docs/torch.md.
"""

import argparse
import contextlib
import os

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import decomp
import decomp.torch
from decomp.algorithms import EF21
from decomp.compress import TopK


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def datasets() -> tuple[TensorDataset, TensorDataset]:
    d = decomp.datasets.load("digits")  # scikit-learn's 8x8 digits, pixels / 16, 1438 / 359
    train = TensorDataset(torch.tensor(d.X).reshape(-1, 1, 8, 8), torch.tensor(d.y))
    test = TensorDataset(torch.tensor(d.X_test).reshape(-1, 1, 8, 8), torch.tensor(d.y_test))
    return train, test


@torch.no_grad()
def evaluate(model: nn.Module, test: TensorDataset) -> float:
    model.eval()
    x, y = test.tensors
    acc = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    return acc


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--accum", type=int, default=2, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--ckpt", default="ckpt")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-after", type=int, help="end after this many epochs (a preemption)")
    args = p.parse_args()

    rank, world = decomp.torch.rank(), decomp.torch.world_size()
    torch.manual_seed(0)
    train, test = datasets()
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    opt = decomp.torch.DistributedOptimizer(opt, model, EF21(TopK(ratio=0.1)))
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, seed=0)
    loader = DataLoader(train, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    steps = args.epochs * (len(loader) // args.accum)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    start = 0
    if args.resume and os.path.exists(f"{args.ckpt}/checkpoint.json"):
        start = opt.load(args.ckpt, scheduler=sched)["epoch"] + 1

    for epoch in range(start, min(args.epochs, args.stop_after or args.epochs)):
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            if i // args.accum == len(loader) // args.accum:
                break  # a last incomplete accumulation
            sync = (i + 1) % args.accum == 0
            with contextlib.nullcontext() if sync else opt.no_sync():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = nn.functional.cross_entropy(model(x), y) / args.accum
                loss.backward()
            if sync:
                opt.clip_grad_norm_(1.0)
                opt.step()
                sched.step()
                opt.zero_grad()
        loss_t = loss.detach().float() * args.accum
        decomp.torch.all_reduce(loss_t, "sum")
        with opt.averaged():
            acc = evaluate(model, test)
        if rank == 0:
            print(f"epoch {epoch}: loss {loss_t.item() / world:.4f}, test acc {acc:.4f}",
                  flush=True)
        opt.save(args.ckpt, scheduler=sched, extra={"epoch": epoch})  # collective


if __name__ == "__main__":
    main()
