"""Train the 1-D CNN on MNIST-1D through decomp.Trainer — a user script, run under mpiexec.

    mpiexec -n 4 python tests/e2e/torch_mnist1d.py --steps 1500 --metrics runs/m.jsonl
    mpiexec -n 4 python tests/e2e/torch_mnist1d.py --algorithm dcd_psgd --lr 0.3

Algorithms: ef21 (EF21-SGD, Top-k), ef21_sgdm (EF21-SGDM, Top-k), sgd / sgdm (dense
all-reduce); decentralized, one node per rank on --topology: dpsgd, dcd_psgd / ecd_psgd (QSGD
with --levels), choco_sgd (Top-k, --consensus-step). Rank 0 writes one JSON line per evaluation to
--metrics.
"""

from __future__ import annotations

import argparse
import time

import torch

import decomp
from decomp.algorithms import CHOCOSGD, DCDPSGD, DPSGD, ECDPSGD, EF21, EF21SGDM, GD, SGDM
from decomp.compress import QSGD, TopK

DECENTRALIZED = ("dpsgd", "dcd_psgd", "ecd_psgd", "choco_sgd")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--algorithm", default="ef21",
                   choices=["ef21", "ef21_sgdm", "sgd", "sgdm", *DECENTRALIZED])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--ratio", type=float, default=0.01, help="Top-k ratio k/d")
    p.add_argument("--eta", type=float, default=0.1, help="EF21-SGDM momentum parameter")
    p.add_argument("--momentum", type=float, default=0.9, help="SGDM beta")
    p.add_argument("--levels", type=int, default=127, help="QSGD levels (DCD/ECD-PSGD)")
    p.add_argument("--consensus-step", type=float, default=0.05, help="CHOCO-SGD consensus step")
    p.add_argument("--topology", default="ring", help="W of the decentralized algorithms")
    p.add_argument("--partition", default="iid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metrics", default=None)
    a = p.parse_args()

    algorithm = {"ef21": lambda: EF21(TopK(ratio=a.ratio)),
                 "ef21_sgdm": lambda: EF21SGDM(TopK(ratio=a.ratio), eta=a.eta),
                 "sgd": lambda: GD(),
                 "sgdm": lambda: SGDM(momentum=a.momentum),
                 "dpsgd": lambda: DPSGD(),
                 "dcd_psgd": lambda: DCDPSGD(QSGD(levels=a.levels)),
                 "ecd_psgd": lambda: ECDPSGD(QSGD(levels=a.levels)),
                 "choco_sgd": lambda: CHOCOSGD(TopK(ratio=a.ratio),
                                               consensus_step=a.consensus_step),
                 }[a.algorithm]()
    data = decomp.datasets.load("mnist1d")
    model = decomp.models.make_model("cnn1d", input_shape=data.input_shape,
                                     n_classes=data.n_classes, seed=a.seed)
    trainer = decomp.Trainer(model, torch.nn.CrossEntropyLoss(), data, algorithm=algorithm,
                             lr=a.lr, batch_size=a.batch_size, partition=a.partition,
                             seed=a.seed, metrics_path=a.metrics,
                             topology=a.topology if a.algorithm in DECENTRALIZED else None)
    t0 = time.perf_counter()
    history = trainer.fit(steps=a.steps, eval_every=a.eval_every)
    if trainer.rank == 0:
        last = history[-1]
        print(f"done: {a.algorithm} on {trainer.n_workers} workers, d = {trainer.flat.d}, "
              f"test acc {last['test_acc']:.4f}, {last['bits_up'] / 8e6:.3f} MB up/worker, "
              f"{last['wall_s']:.1f} s in steps, {time.perf_counter() - t0:.1f} s total",
              flush=True)


if __name__ == "__main__":
    main()
