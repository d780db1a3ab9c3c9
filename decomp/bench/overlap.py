"""``decomp bench step`` rows of ``DistributedOptimizer`` under a DDP-style loop: dense SGD
with the gradient all-reduce after backward (blocking) and bucketed during backward
(``overlap=True``, :mod:`decomp.torch.buckets`), with MPI progress from the hooks (``Testall``)
or none (post and wait only).

The loop is the one DDP's rows run (:func:`decomp.bench.step._torch_step`'s): zero_grad,
forward, backward on this rank's minibatch of (seed, rank, step), ``opt.step()``; the update is
the algorithm's own x ← x − γ (1/n) Σ_i g_i (``optimizer=None``), DDP's SGD step. Split
columns: "compute" is zero_grad + forward + backward (the buckets posted and tested inside),
"comm" is ``opt.step()``: the all-reduce (blocking) or the wait for the buckets still in
flight (overlapped), plus the update — the communication backward did not hide.
"""

from __future__ import annotations

import copy
import time
from typing import Any

#: label -> (overlap, progress); joined into decomp.bench.step.METHODS as kind "optimizer";
#: the label's first words name the algorithm (:func:`_algorithm`)
OPTIMIZER_METHODS: dict[str, tuple[bool, str]] = {
    "sgd opt blocking": (False, "hooks"),
    "sgd opt overlapped": (True, "hooks"),
    "sgd opt overlapped no-test": (True, "none"),
    **{f"{m} opt {how}": (how == "overlapped", "hooks")
       for m in ("powersgd r1", "powersgd r4", "ef21 per-tensor top1%")
       for how in ("blocking", "overlapped")},
}


def _algorithm(label: str, lr: float) -> Any:
    """The algorithm of an ``OPTIMIZER_METHODS`` row (its own update, step size lr)."""
    from decomp.algorithms import EF21, GD, PowerSGD
    from decomp.compress import PerTensor, TopK

    if label.startswith("powersgd r"):
        return PowerSGD(rank=int(label.split()[1][1:]), lr=lr)
    if label.startswith("ef21 per-tensor top1%"):
        return EF21(PerTensor(TopK(ratio=0.01)), lr=lr)
    return GD(lr=lr)


class OptimizerRunner:
    """One ``OPTIMIZER_METHODS`` row on this rank (the bench's runner protocol: ``step()``,
    ``counts()``, ``close()``)."""

    def __init__(self, comm: Any, label: str, model: Any, data: tuple[Any, Any], batch: int,
                 lr: float, seed: int, bucket_cap_mb: float | None = None) -> None:
        import torch
        from torch import nn

        from decomp.problems import minibatch_rows
        from decomp.torch import DistributedOptimizer

        overlap, progress = OPTIMIZER_METHODS[label]
        module = copy.deepcopy(model)
        opts: dict[str, Any] = {"overlap": True, "bucket_cap_mb": bucket_cap_mb} if overlap \
            else {}
        self.opt = DistributedOptimizer(None, module, _algorithm(label, lr), comm=comm,
                                        seed=seed, **opts)
        if self.opt.buckets is not None:
            self.opt.buckets.progress = progress
        X, y = data
        loss_fn = nn.CrossEntropyLoss()
        rank = comm.Get_rank()
        self.t = 0
        self.times = [0.0, 0.0]  # s in zero_grad + forward + backward, s in opt.step()

        def step() -> None:
            self.t += 1
            rows = torch.from_numpy(minibatch_rows(seed, rank, self.t, X.shape[0], batch))
            t0 = time.perf_counter()
            self.opt.zero_grad()
            loss_fn(module(X[rows]), y[rows]).backward()
            t1 = time.perf_counter()
            self.opt.step()
            self.times[0] += t1 - t0
            self.times[1] += time.perf_counter() - t1

        self.step = step

    def counts(self) -> tuple[float, float, float | None, float | None, float | None]:
        b = self.opt.bytes
        return float(b.up), float(b.down), self.times[0], None, self.times[1]

    def close(self) -> None:
        if self.opt.buckets is not None:
            self.opt.buckets.close()


def bench_model(name: str, *, input_shape: tuple[int, ...], n_classes: int, seed: int = 0,
                **options: Any) -> Any:
    """A :func:`decomp.torch.models.make_model` model, or ``"transformer"``: the small
    transformer encoder of the benchmark (issue 22), seeded the same way."""
    import torch
    from torch import nn

    from decomp.torch.models import make_model

    if name != "transformer":
        return make_model(name, input_shape=input_shape, n_classes=n_classes, seed=seed,
                          **options)

    class Encoder(nn.Module):
        """(N, 128, 16) features -> Linear to width 256 -> 4 pre-norm encoder layers (4
        heads, feed-forward 1024) -> mean over the sequence -> Linear to the classes."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(input_shape[-1], 256)
            layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True,
                                               norm_first=True)
            self.body = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
            self.head = nn.Linear(256, n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(self.embed(x)).mean(dim=1))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Encoder()


__all__ = ["OPTIMIZER_METHODS", "OptimizerRunner", "bench_model"]
