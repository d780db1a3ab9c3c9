"""A torch model as a :class:`decomp.problems.Problem` on its flat parameter vector.

f_i(x) = (1/N_i) Σ_{j ∈ shard i} ℓ(model(x; a_j), b_j) + (wd/2)‖x‖², with x ∈ R^d the flat
float32 parameter vector of a :class:`~decomp.torch.flat.FlatModel`. The oracles:

- ``grad(x)``: ∇f_i(x) over all N_i rows (train mode), in chunks of ``chunk`` rows whose
  losses are weighted by (chunk size)/N_i, so the sum is the full-batch gradient for models
  without batch statistics (with BatchNorm it is the chunk-wise gradient; documented).
- ``minibatch_grad(x, rows)``: ∇f_i(x; ξ) on the given rows (one forward/backward).
- ``loss(x)``: f_i(x) in eval mode, no gradient.

Minibatches: the algorithms draw ``rows`` with :func:`decomp.problems.minibatch_rows` from
(seed, worker, step): τ distinct rows per step, independent across steps (sampling with
replacement across steps, not epoch shuffling). A pure function of (seed, worker, step), so
:mod:`decomp.sim` replays it exactly. Dropout and other torch randomness is seeded from
(seed, worker, rows), so it replays too.

Returned gradients: by default the flat gradient buffer itself (no copy). It is valid until the
next ``grad``/``minibatch_grad`` call on this problem (which overwrites it); callers that keep a
gradient across oracle calls must copy it (every algorithm in decomp uses it within the step;
:func:`decomp.sim.simulate` stacks it, which copies). ``copy_grad=True`` returns fresh arrays.
Writing into the returned buffer (an in-place all-reduce, as GD does) is allowed.

x is copied into the parameter buffer only if it is not already that buffer
(:meth:`FlatModel.bind` makes an algorithm's x the buffer, so a run copies nothing per step).
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from decomp.errors import ConfigError
from decomp.problems import Problem
from decomp.torch.data import DatasetRows
from decomp.torch.flat import FlatModel
from decomp.torch.metrics import Metric

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _as_tensor(X: Any) -> torch.Tensor | sp.csr_matrix:
    """Features or targets as a CPU tensor (CSR stays CSR): float64 -> float32 (the models are
    float32), other integer types -> int64 (class labels for cross-entropy)."""
    if sp.issparse(X):
        return sp.csr_matrix(X, dtype=np.float32)
    t = X if isinstance(X, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(X))
    if t.dtype == torch.float64:
        return t.float()
    if not t.is_floating_point() and t.dtype not in (torch.int64, torch.bool):
        return t.long()
    return t


class TorchProblem(Problem):
    """One worker's f_i for a torch model (see the module doc).

    Args:
        flat: the worker's :class:`FlatModel` (each worker needs its own).
        loss_fn: ℓ(output, target) averaged over the batch (``reduction="mean"``), e.g.
            ``torch.nn.CrossEntropyLoss()``.
        X: features of this worker's rows, (N_i, ...) float32 (numpy, torch, or scipy CSR of
            shape (N_i, p): sparse rows are densified per batch), or a
            :class:`~decomp.torch.data.DatasetRows` (rows of any torch Dataset, fetched and
            collated per batch; ``y`` is then None).
        y: targets (N_i, ...) (int64 class labels for cross-entropy, floats for regression).
        weight_decay: wd ≥ 0, adds (wd/2)‖x‖² to f_i and wd·x to every gradient.
        chunk: rows per forward pass in ``grad``/``loss``.
        seed, worker: seed the torch RNG (dropout) per minibatch.
        copy_grad: return fresh gradient arrays instead of the flat buffer.
    """

    def __init__(self, flat: FlatModel, loss_fn: LossFn, X: Any, y: Any, *,
                 weight_decay: float = 0.0, chunk: int = 1024, seed: int = 0, worker: int = 0,
                 copy_grad: bool = False) -> None:
        # Problem.__init__ stores a numpy matrix; a torch problem keeps tensors instead.
        if getattr(loss_fn, "reduction", "mean") != "mean":
            raise ConfigError(f"TorchProblem: loss_fn must average over the batch "
                              f"(reduction='mean'), got reduction={loss_fn.reduction!r}")
        if weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
        if chunk < 1:
            raise ConfigError(f"chunk must be >= 1, got {chunk}")
        self.flat = flat
        self.loss_fn = loss_fn
        self.X = X if isinstance(X, DatasetRows) else _as_tensor(X)
        self.y = None if isinstance(X, DatasetRows) else _as_tensor(y)
        if self.y is not None and self.X.shape[0] != self.y.shape[0]:
            raise ConfigError(f"TorchProblem: X has {self.X.shape[0]} rows, y has "
                              f"{self.y.shape[0]}")
        if self.X.shape[0] < 1:
            raise ConfigError("TorchProblem: a worker needs at least one row")
        self.A = self.X  # Problem's name for the features
        self.b = self.y
        self.dtype = np.dtype(np.float32)
        self.weight_decay = float(weight_decay)
        self.chunk = int(chunk)
        self.seed = int(seed)
        self.worker = int(worker)
        self.copy_grad = copy_grad
        self.last_loss = float("nan")  # ℓ on the last minibatch/full pass (train mode)

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def d(self) -> int:
        return self.flat.d

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    # --- helpers -------------------------------------------------------------------------------
    def _batch(self, rows: np.ndarray | slice) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.X, DatasetRows):
            return self.X.batch(rows)
        assert self.y is not None
        if isinstance(rows, np.ndarray):
            idx = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
            yb = self.y[idx]
            if sp.issparse(self.X):
                return torch.from_numpy(self.X[rows].toarray()), yb
            return self.X[idx], yb
        yb = self.y[rows]
        if sp.issparse(self.X):
            return torch.from_numpy(self.X[rows].toarray()), yb
        return self.X[rows], yb

    def _seed_torch(self, rows: np.ndarray | None) -> None:
        h = 0 if rows is None else zlib.crc32(np.ascontiguousarray(rows, np.int64).tobytes())
        state = np.random.SeedSequence([self.seed, self.worker, h]).generate_state(2,
                                                                                 np.uint32)
        # the CPU generator only: torch.manual_seed also walks every device (~90 µs a step)
        torch.default_generator.manual_seed(int(state[0]) << 32 | int(state[1]))

    def _finish(self) -> np.ndarray:
        self.flat.check_grads()
        g = self.flat.grads
        if self.weight_decay:
            g += self.weight_decay * self.flat.params
        return g.copy() if self.copy_grad else g

    # --- Problem interface ---------------------------------------------------------------------
    def minibatch_grad(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """∇f_i(x; ξ) on ``rows`` (indices into this worker's rows): shape (d,), float32."""
        self.flat.load(x)
        m = self.flat.module
        m.train()
        self.flat.zero_grad()
        self._seed_torch(rows)
        Xb, yb = self._batch(rows)
        loss = self.loss_fn(m(Xb), yb)
        loss.backward()
        self.last_loss = float(loss.detach())
        return self._finish()

    def grad(self, x: np.ndarray) -> np.ndarray:
        """∇f_i(x) over all rows (chunked): shape (d,), float32."""
        self.flat.load(x)
        m = self.flat.module
        m.train()
        self.flat.zero_grad()
        self._seed_torch(None)
        N = self.n_samples
        total = 0.0
        for a in range(0, N, self.chunk):
            sl = slice(a, min(a + self.chunk, N))
            Xb, yb = self._batch(sl)
            loss = self.loss_fn(m(Xb), yb) * ((sl.stop - sl.start) / N)
            loss.backward()
            total += float(loss.detach())
        self.last_loss = total
        return self._finish()

    def _grad_rows(self, x: np.ndarray, A: Any, b: Any) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError("TorchProblem computes gradients with grad/minibatch_grad")

    def evaluate(self, x: np.ndarray, X: Any = None, y: Any = None) -> tuple[float, int, int]:
        """(Σ_j ℓ_j, correct, rows) of x on (X, y) in eval mode (default: this worker's rows);
        see :func:`evaluate_model`."""
        if X is None:
            X, y = self.X, self.y
        return evaluate_model(self.flat, self.loss_fn, x, X, y, chunk=self.chunk)

    def loss(self, x: np.ndarray) -> float:
        """f_i(x): mean loss over this worker's rows in eval mode, plus (wd/2)‖x‖²."""
        total, _, N = self.evaluate(x)
        reg = 0.5 * self.weight_decay * float(np.dot(self.flat.params, self.flat.params))
        return total / N + reg

    def smoothness(self) -> float:
        raise ConfigError("a neural network has no known smoothness constant L, so the theory "
                          "step size (lr = 'theory') is undefined for torch models: give an "
                          "explicit lr (e.g. lr = 0.1)")

    def __repr__(self) -> str:
        return (f"TorchProblem({type(self.flat.module).__name__}, d={self.d}, "
                f"rows={self.n_samples}, worker={self.worker})")


def _batches(X: Any, y: Any, chunk: int) -> tuple[int, Any]:
    """(N, iterator of (inputs, targets) in chunks of ``chunk`` rows) for arrays/tensors/CSR
    or a :class:`DatasetRows` (y None)."""
    if isinstance(X, DatasetRows):
        N = len(X)
        return N, (X.batch(slice(a, min(a + chunk, N))) for a in range(0, N, chunk))
    Xs, ys = _as_tensor(X), _as_tensor(y)
    N = int(Xs.shape[0])

    def gen() -> Any:
        for a in range(0, N, chunk):
            b = min(a + chunk, N)
            yield (torch.from_numpy(Xs[a:b].toarray()) if sp.issparse(Xs) else Xs[a:b]), ys[a:b]
    return N, gen()


@torch.no_grad()
def evaluate_sums(flat: FlatModel, loss_fn: LossFn, x: np.ndarray, X: Any, y: Any = None, *,
                  metrics: dict[str, Metric] | None = None, chunk: int = 1024) -> np.ndarray:
    """The model at x on (X, y) in eval mode, without gradients: float64 array
    [Σ_j ℓ_j, Σ metric_1, ..., Σ metric_m, N] (sums over rows, so the caller can pool them
    across ranks). X: (N, ...) numpy/torch/CSR with y (N, ...), or a :class:`DatasetRows`."""
    flat.load(x)
    m = flat.module
    was_training = m.training
    m.eval()
    metrics = metrics or {}
    out = np.zeros(len(metrics) + 2)
    try:
        N, batches = _batches(X, y, chunk)
        for xb, yb in batches:
            pred = m(xb)
            out[0] += float(loss_fn(pred, yb)) * int(yb.shape[0])
            for k, fn in enumerate(metrics.values()):
                out[1 + k] += float(fn(pred, yb))
        out[-1] = N
    finally:
        m.train(was_training)
    return out


def evaluate_model(flat: FlatModel, loss_fn: LossFn, x: np.ndarray, X: Any, y: Any = None, *,
                   chunk: int = 1024) -> tuple[float, int, int]:
    """(Σ_j ℓ_j, correct, N) of the model at x on (X, y) in eval mode: the summed loss, the
    number of argmax(output) == y for 2-D outputs and integer targets (classification; 0
    otherwise) and the number of rows N (see :func:`evaluate_sums`)."""
    from decomp.torch.metrics import accuracy

    def acc(out: torch.Tensor, t: torch.Tensor) -> float:
        return accuracy(out, t) if out.ndim == 2 and not t.is_floating_point() else 0.0

    tot, correct, n = evaluate_sums(flat, loss_fn, x, X, y, metrics={"acc": acc}, chunk=chunk)
    return float(tot), int(correct), int(n)


def make_torch_problems(module: nn.Module, loss_fn: LossFn, X: Any, y: Any,
                        parts: Sequence[np.ndarray], *, seed: int = 0,
                        weight_decay: float = 0.0, chunk: int = 1024,
                        copy_grad: bool = False) -> list[TorchProblem]:
    """One :class:`TorchProblem` per shard, each on its own deep copy of ``module`` (same
    initial parameters): the n workers of a :func:`decomp.sim.simulate` reference run.

    parts: row indices of each worker's shard (from :func:`decomp.datasets.partition`).
    """
    probs = []
    for i, rows in enumerate(parts):
        rows = np.asarray(rows, dtype=np.int64)
        Xi = X[rows] if sp.issparse(X) or isinstance(X, np.ndarray) else X[torch.from_numpy(rows)]
        yi = y[rows] if isinstance(y, np.ndarray) else y[torch.from_numpy(rows)]
        flat = FlatModel(copy.deepcopy(module))
        probs.append(TorchProblem(flat, loss_fn, Xi, yi, weight_decay=weight_decay,
                                  chunk=chunk, seed=seed, worker=i, copy_grad=copy_grad))
    return probs
