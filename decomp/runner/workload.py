"""The data every method of a run shares: per-worker problems, smoothness constants, x^0."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from decomp.config import Config, is_torch
from decomp.data import load_dataset
from decomp.errors import ConfigError
from decomp.problems import initial_point, make_problem, split_problem


@dataclass
class Workload:
    """Everything the methods share: per-worker problems, constants, start point.

    problems: worker i's f_i at index i (for torch problems under MPI only this rank's worker
    is built; the others are None); L, Ls: smoothness constants (nan for torch); torch: the
    torch data, shards, evaluation model and loss (None for the numpy problems).
    """

    problems: list[Any]
    L: float
    Ls: list[float]
    x0: np.ndarray
    torch: Any = None

    @property
    def d(self) -> int:
        return self.x0.size


def local_workers(cfg: Config, rank: int) -> set[int]:
    """The worker indices MPI rank ``rank`` computes gradients for (a dedicated master none)."""
    if cfg.run.master == "dedicated":
        return set() if rank == 0 else {rank - 1}
    return {rank}


def prepare(cfg: Config, n_workers: int, local: set[int] | None = None) -> Workload:
    """Load the dataset, cut it into n shards, compute L, L_i and x^0 (same on every rank).

    local: for torch problems, the workers to build (None: all, as the reference needs); the
    numpy problems are always built for every worker (they are small).
    """
    p = cfg.problem
    if is_torch(cfg):
        from decomp.torch.workload import build_torch_workload

        taus = [m.batch_size or 1 for m in cfg.methods]
        taus += [m.options["init_batch"] for m in cfg.methods if m.options.get("init_batch")]
        problems, x0, tw = build_torch_workload(
            p, n_workers, seed=cfg.seed, x0=cfg.run.x0 or "model", data_dir=cfg.data_dir,
            min_size=max(taus), local=local)
        return Workload(problems, float("nan"), [float("nan")] * n_workers, x0, tw)
    if (p.dtype or "float64") not in ("float64", "float32"):
        raise ConfigError(f"problem.dtype must be float64 or float32, got {p.dtype!r}")
    ds = load_dataset(p.dataset, directory=cfg.data_dir, dtype=p.dtype or "float64",
                      scale=p.scale, seed=cfg.seed, n_samples=p.n_samples,
                      n_features=p.n_features)
    problems = split_problem(ds, p.kind, n_workers, shard=p.shard, seed=cfg.seed, lam=p.lam)
    L = make_problem(p.kind, ds.A, ds.b, p.lam).smoothness()
    Ls = [q.smoothness() for q in problems]
    x0 = initial_point(cfg.run.x0 or "normal", ds.n_features, seed=cfg.seed,
                       dtype=p.dtype or "float64")
    return Workload(problems, L, Ls, x0)
