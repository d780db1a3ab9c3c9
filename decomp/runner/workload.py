"""The data every method of a run shares, behind one protocol: :class:`Workload`.

The engine knows a workload only through :class:`Workload` (per-worker problems, smoothness
constants, x^0, and the hooks for what a model may carry besides x: statistics reset between
methods, kept across an evaluation, saved in checkpoints; test metrics). Two implementations:
:class:`NumpyWorkload` here (the numpy problems: logistic, least squares) and
:class:`decomp.torch.workload.TorchWorkload` (``kind = "torch"``). Which one a config gets is
a table, :data:`LOADERS` (problem kind -> ``"module:object"`` of its :class:`WorkloadLoader`),
resolved by import path, so this package never imports torch: a numpy run never loads it.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from decomp.config import Config
from decomp.data.shared import load_dataset_once
from decomp.errors import ConfigError
from decomp.layout import Layout
from decomp.problems import initial_point, make_problem, split_problem

#: problem kind -> "module:object" of the :class:`WorkloadLoader` that builds its workload
LOADERS: dict[str, str] = {
    "logistic": "decomp.runner.workload:NUMPY",
    "least_squares": "decomp.runner.workload:NUMPY",
    "torch": "decomp.torch.workload:LOADER",
}


@runtime_checkable
class Workload(Protocol):
    """What the engine needs of the data all methods share.

    problems: worker i's f_i at index i (a loader may build only this rank's workers; the
    others are None); L, Ls: smoothness constants of f and every f_i (nan where there is
    none, e.g. a neural network); x0: the start point (d,), the same on every rank.
    """

    problems: list[Any]
    L: float
    Ls: list[float]
    x0: np.ndarray

    @property
    def d(self) -> int:
        """The model size."""
        ...

    @property
    def layout(self) -> Layout:
        """The model's tensors (:class:`~decomp.layout.Layout`; a numpy problem: one slot)."""
        ...

    def description(self) -> str:
        """One log line: what is trained on which data (no world size, no folder)."""
        ...

    def table(self) -> str | None:
        """A table rank 0 logs once (torch: label counts per worker), or None."""
        ...

    def reset(self) -> None:
        """Back to the state a method starts from (torch: the initial BatchNorm statistics)."""
        ...

    def kept(self) -> AbstractContextManager[None]:
        """A context in which the problems' model statistics may change (a full-gradient
        metric in train mode) and are restored on exit."""
        ...

    def buffers(self) -> list[np.ndarray]:
        """The arrays a checkpoint saves besides the algorithm state (restored in place)."""
        ...

    def test_evaluator(self, comm: Any) -> Any:
        """The collective test-set evaluator (``master(x, ...)``, ``nodes(x_i)``), or None."""
        ...

    def reference_test(self, X: np.ndarray, final: bool) -> dict[str, Any]:
        """Test metrics of a reference iterate (x, or X with rows x_i), one process; {} when
        there is no test set or (``final`` False) they are only known at the end."""
        ...


class WorkloadLoader(Protocol):
    """Builds the :class:`Workload` of a config's ``[problem]`` table."""

    def check(self, cfg: Config) -> None:
        """Refuse what this kind of problem cannot run, before any data is loaded."""
        ...

    def load(self, cfg: Config, n_workers: int, local: set[int] | None,
             comm: Any = None) -> Workload:
        """The workload for n_workers workers; local: the workers this process computes
        gradients for (None: all, as the reference needs); comm: the run's ranks, which a
        loader may use to read the data once per node (None: one process). Same x^0 on
        every rank."""
        ...


def loader_for(cfg: Config) -> WorkloadLoader:
    """The :class:`WorkloadLoader` of ``problem.kind`` (:data:`LOADERS`)."""
    kind = cfg.problem.kind
    if kind not in LOADERS:
        raise ConfigError(f"problem.kind must be one of {', '.join(LOADERS)}, got {kind!r}")
    module, _, name = LOADERS[kind].partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def local_workers(cfg: Config, rank: int) -> set[int]:
    """The worker indices MPI rank ``rank`` computes gradients for (a dedicated master none)."""
    if cfg.run.master == "dedicated":
        return set() if rank == 0 else {rank - 1}
    return {rank}


def prepare(cfg: Config, n_workers: int, local: set[int] | None = None,
            comm: Any = None) -> Workload:
    """Load the dataset, cut it into n shards, compute L, L_i and x^0 (same on every rank).

    local: the workers this process computes for (None: all, as the reference needs); a
    loader may build only those (torch), or all (the small numpy problems). comm: the run's
    ranks (collective then): the numpy problems' dataset is read by one rank per node
    (:func:`decomp.data.shared.load_dataset_once`)."""
    return loader_for(cfg).load(cfg, n_workers, local, comm)


@dataclass
class NumpyWorkload:
    """The numpy problems' workload: every worker's problem, x^0, and L, L_i computed on first
    use (only a step size ``"1/L"`` or ``"theory"`` needs them; ``full``: f on all rows)."""

    problems: list[Any]
    x0: np.ndarray
    kind: str = ""
    dataset: str = ""
    full: Any = None
    _L: float | None = None
    _Ls: list[float] | None = None

    @property
    def L(self) -> float:  # noqa: N802 (the paper's name)
        if self._L is None:
            self._L = float(self.full.smoothness())
        return self._L

    @property
    def Ls(self) -> list[float]:  # noqa: N802
        if self._Ls is None:
            self._Ls = [q.smoothness() for q in self.problems]
        return self._Ls

    @property
    def d(self) -> int:
        return self.x0.size

    @property
    def layout(self) -> Layout:
        return Layout.flat(self.d)

    def description(self) -> str:
        known = f", L = {self._L:.6g}" if self._L is not None else ""
        return f"problem {self.kind} on {self.dataset}: d = {self.d}{known}"

    def table(self) -> str | None:
        return None

    def reset(self) -> None:
        return None

    def kept(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def buffers(self) -> list[np.ndarray]:
        return []

    def test_evaluator(self, comm: Any) -> Any:
        return None

    def reference_test(self, X: np.ndarray, final: bool) -> dict[str, Any]:
        return {}


class NumpyLoader:
    """:class:`WorkloadLoader` of the numpy problems (logistic, least squares)."""

    def check(self, cfg: Config) -> None:
        return None

    def load(self, cfg: Config, n_workers: int, local: set[int] | None,
             comm: Any = None) -> NumpyWorkload:
        """Every worker's problem (they are small), whatever ``local`` says; the dataset read
        once per node of ``comm`` (None: here)."""
        p = cfg.problem
        if (p.dtype or "float64") not in ("float64", "float32"):
            raise ConfigError(f"problem.dtype must be float64 or float32, got {p.dtype!r}")
        ds = load_dataset_once(p.dataset, comm, directory=cfg.data_dir,
                               dtype=p.dtype or "float64", scale=p.scale, seed=cfg.seed,
                               n_samples=p.n_samples, n_features=p.n_features)
        problems = split_problem(ds, p.kind, n_workers, shard=p.shard, seed=cfg.seed, lam=p.lam)
        x0 = initial_point(cfg.run.x0 or "normal", ds.n_features, seed=cfg.seed,
                           dtype=p.dtype or "float64")
        full = make_problem(p.kind, ds.A, ds.b, p.lam)  # L on first use (NumpyWorkload.L)
        return NumpyWorkload(problems, x0, p.kind, p.dataset, full)


#: the numpy problems' loader (:data:`LOADERS`)
NUMPY = NumpyLoader()


@contextlib.contextmanager
def restoring(arrays: list[np.ndarray]) -> Iterator[None]:
    """Restore ``arrays`` (in place) on exit."""
    saved = [a.copy() for a in arrays]
    try:
        yield
    finally:
        for a, s in zip(arrays, saved, strict=True):
            a[...] = s


__all__ = ["LOADERS", "NUMPY", "NumpyLoader", "NumpyWorkload", "Workload", "WorkloadLoader",
           "loader_for", "local_workers", "prepare", "restoring"]
