"""Torch problems for ``decomp run`` / ``decomp sim`` (``[problem] kind = "torch"``).

:data:`LOADER` (named by :data:`decomp.runner.workload.LOADERS`) and
:func:`build_torch_workload` turn the ``[problem]`` table into a :class:`TorchWorkload` — the
data, the shards, x^0 and the workers' :class:`~decomp.torch.TorchProblem` objects — the same
shards, model and x^0 as :class:`decomp.Trainer` builds from the same settings
(``partition(y, n, shard, seed=seed, alpha=dirichlet_alpha, min_size=τ)``, ``make_model(model,
seed=seed)``), so a config run and a Trainer script agree. Under MPI each rank builds only
its own worker's problem (``local``); the reference builds all n.

:func:`reference_test_metrics` gives the test metrics of a :mod:`decomp.sim` result without MPI,
with the same BatchNorm-statistics rules as :class:`decomp.torch.evaluation.TestEvaluator`.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from decomp.data.classification import (
    SplitDataset,
    format_label_counts,
    label_counts,
    load,
    partition,
)
from decomp.errors import ConfigError, DataError
from decomp.layout import Layout
from decomp.problems import initial_point
from decomp.runner.workload import restoring
from decomp.torch.evaluation import TestEvaluator
from decomp.torch.flat import FlatModel
from decomp.torch.problem import LossFn, TorchProblem, evaluate_model

#: config name -> loss factory (mean reduction)
LOSSES: dict[str, Any] = {"cross_entropy": nn.CrossEntropyLoss}


def make_loss(name: str) -> LossFn:
    """The loss ``name`` (:data:`LOSSES`), averaging over the batch."""
    if name not in LOSSES:
        raise ConfigError(f"problem.loss must be one of {', '.join(LOSSES)}, got {name!r}")
    return LOSSES[name]()


@dataclass
class TorchWorkload:
    """The :class:`decomp.runner.workload.Workload` of a torch problem.

    problems: the workers' :class:`TorchProblem` (None for workers another rank computes);
    x0: the start point (d,) float32; L, Ls: nan (a network has no smoothness constant);
    data: train/test data; parts: row indices of each worker's shard; loss_fn: ℓ; flat: this
    process's evaluation model (under MPI also the local worker's problem model); buffers0:
    its initial float BatchNorm statistics (restored at the start of every method);
    buffer_mode: "average" | "local"; eval_chunk: rows per forward pass; flats: the flat
    models of the problems built here (their statistics are reset too); model, shard: the
    config's names (for the log).
    """

    problems: list[TorchProblem | None]
    x0: np.ndarray
    data: SplitDataset
    parts: list[np.ndarray]
    loss_fn: LossFn
    flat: FlatModel
    buffers0: np.ndarray
    buffer_mode: str
    eval_chunk: int
    flats: list[FlatModel] = field(default_factory=list)
    model: str = ""
    shard: str = ""

    @property
    def L(self) -> float:  # noqa: N802 (the paper's name)
        return float("nan")

    @property
    def layout(self) -> Layout:
        """The model's parameter tensors (:attr:`FlatModel.layout`)."""
        return self.flat.layout

    @property
    def Ls(self) -> list[float]:  # noqa: N802
        return [float("nan")] * len(self.problems)

    @property
    def d(self) -> int:
        return self.x0.size

    def _models(self) -> list[FlatModel]:
        return list({id(f): f for f in [self.flat, *self.flats]}.values())

    def reset_buffers(self) -> None:
        """Every model's BatchNorm statistics back to the initial ones (a new method starts)."""
        for f in self._models():
            f.buffers[:] = self.buffers0

    reset = reset_buffers

    def buffers(self) -> list[np.ndarray]:
        """The BatchNorm statistics of this process's models (what a checkpoint saves)."""
        return [f.buffers for f in self._models() if f.buffers.size]

    def kept(self) -> AbstractContextManager[None]:
        """Every model's BatchNorm statistics restored on exit (a full-gradient metric runs
        the models in train mode, which updates them)."""
        return restoring(self.buffers())

    def description(self) -> str:
        return (f"problem torch: model {self.model} on {self.data.name} ({self.data.n_train} "
                f"train / {self.data.n_test} test rows), d = {self.d}")

    def table(self) -> str | None:
        return self.label_table(f"label counts per worker ({self.shard} partition of "
                                f"{self.data.name}):")

    def label_table(self, title: str) -> str:
        """Per-worker label counts (the table the Trainer prints)."""
        return format_label_counts(label_counts(self.data.y, self.parts, self.data.n_classes),
                                   title)

    def overlap(self, session: Any, algorithm: Any, bucket_cap_mb: float | None) -> Any:
        """``[run] overlap = true``: this rank's worker's gradient buckets, sent while its
        backward runs (:func:`decomp.torch.overlap.attach`; a clear error for a method or
        option it cannot overlap, the same on every rank)."""
        from decomp.torch.overlap import attach

        problem = next(p for p in self.problems if p is not None)
        return attach(problem.flat, session, algorithm, overlap=True,
                      bucket_cap_mb=bucket_cap_mb, problem=problem)

    def test_evaluator(self, comm: Any) -> TestEvaluator:
        """The collective test-set evaluator on this process's evaluation model."""
        return TestEvaluator(self.flat, self.loss_fn, self.data.X_test, self.data.y_test, comm,
                             buffers=self.buffer_mode, chunk=self.eval_chunk)

    def reference_test(self, X: np.ndarray, final: bool) -> dict[str, Any]:
        """:func:`reference_test_metrics` without the per-node lists; with BatchNorm (whose
        statistics are only known at the end) only at the ``final`` step."""
        if self.flat.buffers.size and not final:
            return {}
        got = reference_test_metrics(self, X, self.problems)
        return {k: v for k, v in got.items() if not k.endswith("_i")}


def build_torch_workload(problem: Any, n_workers: int, *, seed: int, x0: str,
                         data_dir: str | None = None, min_size: int = 1,
                         local: Collection[int] | None = None) -> TorchWorkload:
    """The workload of a ``[problem]`` table with ``kind = "torch"``.

    problem: a resolved :class:`decomp.config.ProblemConfig` (model, model_options, dataset,
    dataset_options, loss, shard, dirichlet_alpha, weight_decay, buffers, eval_chunk).
    x0: "model" (the model's seeded initialisation), "zeros", "normal" or a .npy path.
    min_size: fewest rows per shard (the largest minibatch τ; Dirichlet shards are redrawn).
    local: the worker indices to build problems for (None: all n, for the reference); the
    others are None. Under MPI a rank's worker shares the evaluation model ``flat``.
    Its x0 is a (d,) float32 vector.
    """
    from decomp.torch.models import check_model, make_model

    check_model(problem.model, problem.model_options)  # before any data is loaded
    try:
        data = load(problem.dataset, data_dir=data_dir, **(problem.dataset_options or {}))
    except ConfigError as e:
        raise ConfigError(f"problem.dataset: {e}") from None
    module = make_model(problem.model, input_shape=data.input_shape, n_classes=data.n_classes,
                        seed=seed, **(problem.model_options or {}))
    template = copy.deepcopy(module)  # pristine copy for the other workers' models
    flat = FlatModel(module)
    loss_fn = make_loss(problem.loss or "cross_entropy")
    if data.n_train < n_workers * min_size:
        raise DataError(f"problem.dataset {problem.dataset!r}: {data.n_train} training rows give "
                        f"each of {n_workers} workers at most {data.n_train // n_workers}, fewer "
                        f"than the largest [[methods]] batch_size (τ = {min_size}): lower "
                        "batch_size or use fewer workers")
    parts = partition(data.y, n_workers, problem.shard, seed=seed,
                      alpha=problem.dirichlet_alpha or 0.5, min_size=min_size)
    if x0 == "model":
        x = flat.params.copy()
    else:
        x = initial_point(x0, flat.d, seed=seed, dtype="float32")
    wanted = range(n_workers) if local is None else local
    problems: list[TorchProblem | None] = [None] * n_workers
    flats: list[FlatModel] = []
    shared = local is not None and len(local) == 1
    for i in wanted:
        f = flat if shared else FlatModel(copy.deepcopy(template))
        rows = parts[i]
        problems[i] = TorchProblem(f, loss_fn, data.X[rows], data.y[rows],
                                   weight_decay=problem.weight_decay or 0.0,
                                   chunk=problem.eval_chunk or 1024, seed=seed, worker=i)
        flats.append(f)
    return TorchWorkload(problems, x, data, parts, loss_fn, flat, flat.buffers.copy(),
                         problem.buffers or "average", problem.eval_chunk or 1024, flats,
                         model=problem.model, shard=problem.shard)


def reference_test_metrics(work: TorchWorkload, X: np.ndarray,
                           problems: list[Any]) -> dict[str, Any]:
    """Test metrics of a reference run's final iterate, in one process (no MPI).

    X: (d,) — one model (master–worker, all-reduce) — or (n, d), row i = x_i (decentralized).
    problems: the n reference problems (their models hold each worker's BatchNorm statistics).
    The shared model (x, or x̄) uses the workers' mean statistics ("average") or worker 0's
    ("local"); each x_i its own. Returns test_loss, test_acc, and for (n, d) also
    test_loss_mean, test_acc_mean, test_acc_min, test_loss_i, test_acc_i.
    """
    flat, data = work.flat, work.data
    own = flat.buffers.copy()
    stats = [p.flat.buffers for p in problems]

    def run(x: np.ndarray, buffers: np.ndarray) -> tuple[float, float]:
        flat.buffers[:] = buffers
        tot, correct, cnt = evaluate_model(flat, work.loss_fn, np.asarray(x, np.float32),
                                           data.X_test, data.y_test, chunk=work.eval_chunk)
        return tot / cnt, correct / cnt

    shared = (np.mean(np.stack(stats).astype(np.float64), axis=0).astype(np.float32)
              if work.buffer_mode == "average" else stats[0])
    try:
        if X.ndim == 1:
            loss, acc = run(X, shared)
            return {"test_loss": float(loss), "test_acc": float(acc)}
        xbar = X.astype(np.float64).mean(axis=0)
        loss, acc = run(xbar, shared)
        each = [run(X[i], stats[i]) for i in range(X.shape[0])]
    finally:
        flat.buffers[:] = own
    losses = [float(a) for a, _ in each]
    accs = [float(b) for _, b in each]
    return {"test_loss": float(loss), "test_acc": float(acc),
            "test_loss_mean": float(np.mean(losses)), "test_acc_mean": float(np.mean(accs)),
            "test_acc_min": float(min(accs)), "test_loss_i": losses, "test_acc_i": accs}


class TorchLoader:
    """The :class:`decomp.runner.workload.WorkloadLoader` of ``kind = "torch"``."""

    def check(self, cfg: Any) -> None:
        """A network has no smoothness constant: every lr must be a number."""
        for m in cfg.methods:
            if isinstance(m.lr, str):
                raise ConfigError(
                    f"{m.label}: lr = {m.lr!r} needs the smoothness constant L of the "
                    f"objective, which a neural network does not have: give [[methods]] lr as "
                    f"a number for problem.kind = 'torch' (e.g. lr = 0.1)")

    def load(self, cfg: Any, n_workers: int, local: set[int] | None,
             comm: Any = None) -> TorchWorkload:
        """Only the ``local`` workers' problems (None: all n); the shards are at least as
        large as the largest minibatch of any method (``batch_size``, ``init_batch``).
        comm: unused (each rank builds its own shards)."""
        taus = [m.batch_size or 1 for m in cfg.methods]
        taus += [m.options["init_batch"] for m in cfg.methods if m.options.get("init_batch")]
        return build_torch_workload(cfg.problem, n_workers, seed=cfg.seed,
                                    x0=cfg.run.x0 or "model", data_dir=cfg.data_dir,
                                    min_size=max(taus), local=local)


#: the loader :data:`decomp.runner.workload.LOADERS` names for ``kind = "torch"``
LOADER = TorchLoader()

__all__ = ["LOADER", "LOSSES", "TorchLoader", "TorchWorkload", "build_torch_workload",
           "make_loss", "reference_test_metrics"]
