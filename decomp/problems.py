"""Objectives with gradient oracles on flat numpy vectors (paper notation: f_i, ∇f_i, L_i).

- :class:`Logistic`: the EF21 experiments' logistic regression with the non-convex regulariser
  f(x) = (1/N) Σ_j log(1 + exp(−b_j a_jᵀx)) + λ Σ_k x_k²/(1 + x_k²),  b_j ∈ {−1, +1};
  L = λ_max(AᵀA)/(4N) + 2λ.
- :class:`LeastSquares`: f(x) = (1/2N)‖Ax − b‖² (the PL setting); L = λ_max(AᵀA)/N.

A problem holds one worker's rows (its shard) or the whole dataset. Vectors are float64 or
float32 (the dataset's dtype); gradients are fresh arrays of shape (d,).

What an algorithm needs of a problem is the :class:`GradientOracle` protocol (the numpy
problems here and the torch front end's oracle implement it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from decomp.data import Dataset, partition
from decomp.errors import ConfigError, DataError
from decomp.layout import Layout

PROBLEMS = ("logistic", "least_squares")
_DENSE_MAX_D = 4096  # shards with at most this many features are stored dense (faster A @ x)


@runtime_checkable
class GradientOracle(Protocol):
    """A worker's f_i as the algorithms see it (:func:`oracle_grad`): ``n_samples`` rows,
    ``grad(x)`` = ∇f_i(x) and ``minibatch_grad(x, rows)`` = ∇f_i(x; ξ) over the sorted row
    indices ``rows`` (int64, (τ,)), both fresh (d,) arrays of x's dtype; ``loss(x)`` = f_i(x)
    (metrics)."""

    @property
    def n_samples(self) -> int: ...

    def grad(self, x: np.ndarray) -> np.ndarray: ...

    def minibatch_grad(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray: ...

    def loss(self, x: np.ndarray) -> float: ...


def lambda_max_gram(A: np.ndarray | sp.csr_matrix) -> float:
    """Largest eigenvalue of AᵀA (= σ_max(A)², = λ_max(AAᵀ)), never forming a large Gram.

    d ≤ 4096: exactly, eigvalsh of the d × d AᵀA. Wider A: the same value from the n × n AAᵀ
    when there are at most 4096 rows, else by Lanczos (``eigsh``, a power-iteration method)
    on v ↦ Aᵀ(Av) with the sparse A itself: cost O(nnz(A)) per iteration, whatever d is.
    """
    n, d = A.shape
    if d <= _DENSE_MAX_D:
        G = A.T @ A
        G = G.toarray() if sp.issparse(G) else G
    elif n <= _DENSE_MAX_D:
        G = A @ A.T
        G = G.toarray() if sp.issparse(G) else G
    else:
        from scipy.sparse.linalg import LinearOperator, eigsh

        op = LinearOperator((d, d), matvec=lambda v: A.T @ (A @ v), dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            top = float(eigsh(op, k=1, which="LA", return_eigenvectors=False, tol=1e-10)[0])
        if not np.isfinite(top):
            raise DataError(_NONFINITE_GRAM)
        return top
    G = np.asarray(G, dtype=np.float64)
    if not np.all(np.isfinite(G)):
        raise DataError(_NONFINITE_GRAM)
    return float(np.linalg.eigvalsh(G)[-1])


_NONFINITE_GRAM = ("the feature matrix has non-finite values (NaN or inf, or entries so large "
                   "that AᵀA overflows): check the dataset or use problem.scale")


class Problem(ABC):
    """f on a set of rows: loss, full gradient, minibatch gradient, smoothness constant."""

    def __init__(self, A: np.ndarray | sp.csr_matrix, b: np.ndarray) -> None:
        if sp.issparse(A) and A.shape[1] <= _DENSE_MAX_D:
            A = A.toarray()
        self.A = A
        self.b = np.ascontiguousarray(b)
        self.dtype = np.dtype(self.b.dtype)

    @property
    def d(self) -> int:
        return int(self.A.shape[1])

    @property
    def layout(self) -> Layout:
        """One slot of shape (d,): a numpy problem's x is a single tensor."""
        return Layout.flat(self.d)

    @property
    def n_samples(self) -> int:
        return int(self.A.shape[0])

    @abstractmethod
    def loss(self, x: np.ndarray) -> float:
        """f(x)."""

    @abstractmethod
    def _grad_rows(self, x: np.ndarray, A: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Gradient of the mean loss over the given rows, plus any regulariser."""

    def grad(self, x: np.ndarray) -> np.ndarray:
        """∇f(x): shape (d,), the problem's dtype."""
        return self._grad_rows(x, self.A, self.b)

    def minibatch_grad(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """∇f(x; ξ) on the sampled ``rows`` (indices into this problem's rows)."""
        return self._grad_rows(x, self.A[rows], self.b[rows])

    @abstractmethod
    def smoothness(self) -> float:
        """Smoothness constant L of this f."""


class Logistic(Problem):
    """Logistic loss with the non-convex regulariser λ Σ x_k²/(1 + x_k²) (λ = ``lam``)."""

    def __init__(self, A: np.ndarray | sp.csr_matrix, b: np.ndarray, lam: float = 0.1) -> None:
        super().__init__(A, b)
        self.lam = lam

    def loss(self, x: np.ndarray) -> float:
        z = -self.b * (self.A @ x)
        x2 = x * x
        return float(np.mean(np.logaddexp(0, z)) + self.lam * np.sum(x2 / (1 + x2)))

    def _grad_rows(self, x: np.ndarray, A: np.ndarray, b: np.ndarray) -> np.ndarray:
        s = -b * expit(-b * (A @ x))
        x2 = x * x
        g = A.T @ s
        g = g / b.size + self.lam * 2 * x / ((1 + x2) * (1 + x2))
        return np.asarray(g, dtype=self.dtype)

    def smoothness(self) -> float:
        return lambda_max_gram(self.A) / (4 * self.n_samples) + 2 * self.lam


class LeastSquares(Problem):
    """f(x) = (1/2N) ‖Ax − b‖²."""

    def loss(self, x: np.ndarray) -> float:
        r = self.A @ x - self.b
        return float(0.5 * np.dot(r, r) / self.n_samples)

    def _grad_rows(self, x: np.ndarray, A: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(A.T @ (A @ x - b) / b.size, dtype=self.dtype)

    def smoothness(self) -> float:
        return lambda_max_gram(self.A) / self.n_samples


def make_problem(kind: str, A: np.ndarray | sp.csr_matrix, b: np.ndarray,
                 lam: float = 0.1) -> Problem:
    """Build a problem by config name on the given rows."""
    if kind == "logistic":
        return Logistic(A, b, lam)
    if kind == "least_squares":
        return LeastSquares(A, b)
    raise ConfigError(f"unknown problem kind {kind!r} (known: {', '.join(PROBLEMS)})")


def split_problem(data: Dataset, kind: str, n_workers: int, *, shard: str = "contiguous",
                  seed: int = 0, lam: float = 0.1) -> list[Problem]:
    """One problem per worker on its shard of ``data`` (EF21's contiguous split by default)."""
    rows = partition(data.n_samples, n_workers, shard, seed, labels=data.b)
    return [make_problem(kind, data.A[r], data.b[r], lam) for r in rows]


def minibatch_rows(seed: int, worker: int, step: int, n_rows: int, batch_size: int) -> np.ndarray:
    """Rows of worker ``worker``'s minibatch ξ at ``step``: τ = batch_size distinct rows, drawn
    from (seed, worker, step, MINIBATCH) so the reference replays the same sample."""
    from decomp.rng import Purpose, generator

    if not 1 <= batch_size <= n_rows:
        raise ConfigError(f"batch_size = {batch_size} does not fit worker {worker}'s shard of "
                          f"{n_rows} rows: lower [[methods]] batch_size to at most {n_rows} "
                          "or use fewer workers")
    rows = generator(seed, worker, step, Purpose.MINIBATCH).choice(n_rows, batch_size,
                                                                    replace=False)
    rows.sort()
    return rows


def oracle_grad(problem: GradientOracle, x: np.ndarray, *, seed: int, worker: int, step: int,
                batch_size: int | None) -> np.ndarray:
    """∇f_i(x) when ``batch_size`` is None, else the minibatch gradient ∇f_i(x; ξ_i^step)."""
    if batch_size is None:
        return problem.grad(x)
    return problem.minibatch_grad(x, minibatch_rows(seed, worker, step, problem.n_samples,
                                                    batch_size))


def read_x0(path: str) -> np.ndarray:
    """The vector of a ``run.x0`` .npy file: a 1-D array of finite real numbers (integers are
    accepted); a :class:`ConfigError` naming the file and the fix otherwise. The length is the
    caller's to check (:func:`initial_point`)."""
    try:
        x0 = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        reason = ("it is a pickle or not a .npy file" if isinstance(e, ValueError)
                  else getattr(e, "strerror", None) or str(e))
        raise ConfigError(f"run.x0: cannot read {path!r} ({reason}); save the start point "
                          "with numpy.save(path, x) as a 1-D float array") from None
    if not isinstance(x0, np.ndarray):  # an .npz archive
        raise ConfigError(f"run.x0: {path!r} is an .npz archive; save one 1-D array with "
                          "numpy.save")
    if x0.dtype.kind not in "fiu":
        what = ("complex numbers" if x0.dtype.kind == "c" else f"dtype {x0.dtype}")
        raise ConfigError(f"run.x0: {path!r} holds {what}; the start point must be real "
                          "(float) values: save x.real or convert with x.astype(float)")
    if x0.ndim != 1:
        raise ConfigError(f"run.x0: {path!r} has shape {x0.shape}; the start point must be a "
                          "1-D vector (save x.ravel())")
    bad = np.flatnonzero(~np.isfinite(x0)) if x0.dtype.kind == "f" else np.empty(0)
    if bad.size:
        j = int(bad[0])
        raise ConfigError(f"run.x0: {path!r} has {bad.size} non-finite entries (first "
                          f"x0[{j}] = {x0[j]}); the start point must be finite")
    return x0


def initial_point(spec: str, d: int, *, seed: int = 0, dtype: str = "float64") -> np.ndarray:
    """x^0: ``"zeros"``, ``"normal"`` (N(0, I) from (seed, INIT), the EF21 experiments), or
    the path of a ``.npy`` file holding a (d,) vector of finite real numbers (:func:`read_x0`)."""
    from decomp.rng import Purpose, generator

    if spec == "zeros":
        return np.zeros(d, dtype=dtype)
    if spec == "normal":
        return generator(seed, 0, 0, Purpose.INIT).standard_normal(d).astype(dtype)
    if spec.endswith(".npy"):
        x0 = read_x0(spec)
        if x0.shape != (d,):
            raise ConfigError(f"run.x0: {spec!r} has shape {x0.shape}, the model needs ({d},)")
        x0 = np.ascontiguousarray(x0, dtype=dtype)
        if not np.all(np.isfinite(x0)):
            raise ConfigError(f"run.x0: {spec!r} has values outside the {dtype} range")
        return x0
    raise ConfigError(f"run.x0 must be 'zeros', 'normal' or a .npy path, got {spec!r}")
