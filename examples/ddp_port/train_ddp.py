"""A PyTorch DDP training script, the starting point of the port to decomp (train_decomp.py).

    torchrun --standalone --nproc-per-node 2 examples/ddp_port/train_ddp.py --epochs 8

A small CNN with BatchNorm on the 8x8 digits (decomp.datasets, bundled), AdamW, OneCycleLR,
gradient clipping, gradient accumulation with no_sync(), bfloat16 autocast, a
DistributedSampler, evaluation and a checkpoint each epoch (--resume continues from it).
torch.distributed over gloo, CPU only. The diff to train_decomp.py is counted in
docs/torch.md ("DDP to decomp").
"""

import argparse
import contextlib
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import decomp


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

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    train, test = datasets()
    model = DDP(make_model())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, seed=0)
    loader = DataLoader(train, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    steps = args.epochs * (len(loader) // args.accum)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    start = 0
    if args.resume and os.path.exists(f"{args.ckpt}/ckpt.pt"):
        ck = torch.load(f"{args.ckpt}/ckpt.pt")
        model.module.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        start = ck["epoch"] + 1

    for epoch in range(start, min(args.epochs, args.stop_after or args.epochs)):
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            if i // args.accum == len(loader) // args.accum:
                break  # a last incomplete accumulation
            sync = (i + 1) % args.accum == 0
            with contextlib.nullcontext() if sync else model.no_sync():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = nn.functional.cross_entropy(model(x), y) / args.accum
                loss.backward()
            if sync:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                opt.zero_grad()
        loss_t = loss.detach().float() * args.accum
        dist.all_reduce(loss_t)
        if rank == 0:
            acc = evaluate(model.module, test)
            print(f"epoch {epoch}: loss {loss_t.item() / world:.4f}, test acc {acc:.4f}",
                  flush=True)
            os.makedirs(args.ckpt, exist_ok=True)
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "epoch": epoch}, f"{args.ckpt}/ckpt.pt")
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
