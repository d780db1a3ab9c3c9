"""A user's own training loop, as the preemption/checkpoint/metrics tests run it under
``mpiexec -n 4``: a small MLP with BatchNorm and dropout, AdamW and OneCycleLR, a minibatch
drawn from torch's global generator (so the saved random state matters), ``opt.should_stop()``
after every step, ``opt.save``/``opt.load`` into one folder, ``opt.export`` and a
``MetricsWriter``.

    python user_loop_script.py OUT ALGORITHM STEPS [--pause-at T] [--rank0-save-at T]

OUT/ckpt: the checkpoint folder (loaded with missing_ok, so a second launch resumes);
OUT/run: the MetricsWriter's run folder; OUT/final/rank<r>.pt: every rank's final model;
OUT/model.pt: the export. ``--pause-at T``: rank 1 writes its pid to OUT/pid after step T and
waits until a stop signal has reached it (the test sends it; the others wait in step T + 1's
collective), so the stop is agreed after step T + 1 whatever the signal's delivery delay.
``--rank0-save-at T``: the DDP habit, ``if rank == 0: opt.save(...)`` after step T.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from mpi4py import MPI
from torch import nn

import decomp.torch
from decomp.algorithms import CHOCOSGD, EF21
from decomp.compress import TopK
from decomp.runner.lifecycle import SIGNALS  # the flag should_stop() votes on

p = argparse.ArgumentParser()
p.add_argument("out", type=Path)
p.add_argument("algorithm", choices=["ef21", "choco"])
p.add_argument("steps", type=int)
p.add_argument("--pause-at", type=int, default=-1)
p.add_argument("--rank0-save-at", type=int, default=-1)
args = p.parse_args()
rank = MPI.COMM_WORLD.Get_rank()

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                      nn.Linear(16, 3))
inner = torch.optim.AdamW(model.parameters(), lr=1e-2)
if args.algorithm == "ef21":
    opt = decomp.torch.DistributedOptimizer(inner, model, EF21(TopK(ratio=0.25)), seed=1)
else:
    opt = decomp.torch.DistributedOptimizer(inner, model, CHOCOSGD(TopK(ratio=0.25),
                                            consensus_step=0.5), topology="ring", seed=1)
sched = torch.optim.lr_scheduler.OneCycleLR(inner, max_lr=0.05, total_steps=args.steps)
data = torch.Generator().manual_seed(100 + rank)  # this rank's shard
X = torch.randn(256, 8, generator=data)
y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
torch.manual_seed(1000 + rank)  # minibatches and dropout: torch's global generator

extra = opt.load(args.out / "ckpt", scheduler=sched, missing_ok=True)
if extra is not None:
    print(f"rank {rank}: resumed at step {opt.steps} ({extra['note']})", flush=True)
writer = decomp.torch.MetricsWriter(opt, args.out / "run", name=f"{args.algorithm}-topk")
loss_fn = nn.CrossEntropyLoss()
while opt.steps < args.steps:
    idx = torch.randint(0, len(X), (32,))
    opt.zero_grad()
    loss = loss_fn(model(X[idx]), y[idx])
    loss.backward()
    opt.step()
    sched.step()
    if opt.steps % 5 == 0 or opt.steps == args.steps:
        writer.log(loss=loss.item())
    if opt.steps == args.pause_at and rank == 1:  # test only: hold until the signal is here
        (args.out / "pid").write_text(str(os.getpid()))
        deadline = time.monotonic() + 300
        while not SIGNALS.signum and time.monotonic() < deadline:
            time.sleep(0.02)
    if opt.steps == args.rank0_save_at and rank == 0:
        opt.save(args.out / "ckpt", timeout_s=5)
    if opt.should_stop():
        opt.save(args.out / "ckpt", scheduler=sched, extra={"note": f"step {opt.steps}"})
        writer.close()
        print(f"rank {rank}: stopped by signal {opt.stop_signal}, saved at step {opt.steps}",
              flush=True)
        sys.exit(opt.exit_code)
writer.close()
(args.out / "final").mkdir(exist_ok=True)
torch.save({k: v.clone() for k, v in model.state_dict().items()},
           args.out / "final" / f"rank{rank}.pt")
opt.export(args.out / "model.pt")
print(f"rank {rank}: done at step {opt.steps}", flush=True)
