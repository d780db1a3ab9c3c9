"""Datasets and partitions for the numpy problems.

A dataset is a feature matrix A (N x d; dense float, or scipy CSR for sparse LIBSVM files) and
labels b (N,). Sources:

- ``"breast_cancer"``, ``"digits"``: scikit-learn's bundled sets (no download); digits becomes
  binary (even vs odd digit) with labels in {-1, +1}.
- a LIBSVM name (``"a9a"``, ``"mushrooms"``, ``"phishing"``, ``"w8a"``, ...) or ``"libsvm:NAME"``:
  the file NAME, NAME.gz or NAME.bz2 in the data directory (``--data-dir`` or ``$DECOMP_DATA``),
  read with scikit-learn's svmlight loader; or a path to such a file.
- ``"synthetic"``: Gaussian features and labels from a seeded linear model (tests, sweeps).

Binary labels are mapped to {-1, +1} (smaller value -> -1), as the logistic loss expects.
Partitions follow the EF21 experiments: ``contiguous`` shards in file order of N // n rows each,
the last worker taking the remainder; ``iid`` does the same on a seeded permutation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from decomp.errors import ConfigError, DataError
from decomp.rng import Purpose, generator

SKLEARN_SETS = ("breast_cancer", "digits")
SCALINGS = ("none", "standard", "maxabs")
PARTITIONS = ("contiguous", "iid", "by_label")
#: largest sparse matrix (entries) scale = "standard" may densify: 2**28 float64 = 2 GiB
DENSE_MAX_ENTRIES = 1 << 28


@dataclass(frozen=True)
class Dataset:
    """Features ``A`` (N x d, dense ndarray or CSR) and labels ``b`` (N,), both of one dtype."""

    name: str
    A: np.ndarray | sp.csr_matrix
    b: np.ndarray

    @property
    def n_samples(self) -> int:
        return int(self.A.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.A.shape[1])


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The directory for LIBSVM files: the explicit one, else ``$DECOMP_DATA``, else None."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("DECOMP_DATA")
    return Path(env).expanduser() if env else None


def find_data_file(name: str, directory: Path | None, what: str = "dataset") -> Path:
    """The file for ``name``: a path as given, else NAME, NAME.gz, NAME.bz2 or NAME.txt in
    ``directory``; a :class:`DataError` listing what was tried otherwise."""
    p = Path(name).expanduser()
    if p.is_file():
        return p
    tried: list[str] = []
    if directory is not None:
        for cand in (name, name + ".gz", name + ".bz2", name + ".txt"):
            q = directory / cand
            tried.append(str(q))
            if q.is_file():
                return q
    where = ", ".join(tried) if tried else "no data directory set"
    raise DataError(f"{what} {name!r} not found (tried: {where}). Put the file there or point "
                    "--data-dir / DECOMP_DATA at the directory that holds it")


def check_finite(A: np.ndarray | sp.spmatrix, b: np.ndarray, source: str) -> None:
    """Refuse a feature matrix or label vector holding NaN or inf with a :class:`DataError`
    naming ``source`` (a file) and the first bad entry (0-based sample and feature)."""
    y = np.asarray(b)
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        i = int(np.flatnonzero(~np.isfinite(y))[0])
        raise DataError(f"{source}: label of sample {i} (0-based) is {y[i]}; labels must be "
                        "finite numbers: fix or drop that row")
    if sp.issparse(A):
        M = sp.csr_matrix(A)
        vals, cols = M.data, M.indices
        bad = np.flatnonzero(~np.isfinite(vals)) if vals.dtype.kind == "f" else np.empty(0)
        if bad.size == 0:
            return
        k = int(bad[0])
        row = int(np.searchsorted(M.indptr, k, side="right")) - 1
        col, val, count = int(cols[k]), vals[k], bad.size
    else:
        D = np.asarray(A)
        if D.dtype.kind != "f" or np.all(np.isfinite(D)):
            return
        mask = ~np.isfinite(D.reshape(D.shape[0], -1))
        count = int(mask.sum())
        row, col = (int(v) for v in np.argwhere(mask)[0])
        val = D.reshape(D.shape[0], -1)[row, col]
    raise DataError(f"{source}: {count} non-finite feature value(s), the first at sample {row}, "
                    f"feature {col} (0-based) = {val}; fix or drop those rows (NaN/inf make "
                    "every gradient NaN)")


def _binary_labels(y: np.ndarray, name: str) -> np.ndarray:
    vals = np.unique(y)
    if vals.size != 2:
        raise DataError(f"dataset {name!r} has {vals.size} distinct labels; the logistic "
                        "problem needs exactly two")
    return np.where(y == vals[1], 1.0, -1.0)


#: the CSV file scikit-learn ships for each bundled set (sklearn/datasets/data/)
_SKLEARN_FILES = {"breast_cancer": "breast_cancer.csv", "digits": "digits.csv.gz"}


def _sklearn_set(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and integer targets of a scikit-learn bundled set, the values its
    ``load_breast_cancer`` / ``load_digits`` return. The CSV file is read directly when it is
    where scikit-learn keeps it, so a run does not import scikit-learn (~1 s a rank, with
    scipy.stats); otherwise (another layout) through scikit-learn itself."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None or spec.origin is None:
        raise DataError(f"dataset {name!r} is scikit-learn's bundled set: install "
                        "scikit-learn (pip install scikit-learn)")
    path = Path(spec.origin).parent / "datasets" / "data" / _SKLEARN_FILES[name]
    if path.is_file():
        if name == "digits":  # as load_digits: np.loadtxt, the last column is the digit
            data = np.loadtxt(path, delimiter=",")
            return data[:, :-1], data[:, -1].astype(int)
        # as load_csv_data: header "n_samples,n_features,names...", rows "x...,target"
        rows = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
        return rows[:, :-1], rows[:, -1].astype(int)
    from sklearn import datasets

    bunch = datasets.load_breast_cancer() if name == "breast_cancer" else datasets.load_digits()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)


def load_dataset(name: str, *, directory: str | os.PathLike[str] | None = None,
                 dtype: str = "float64", scale: str = "none", seed: int = 0,
                 n_samples: int = 1000, n_features: int = 20) -> Dataset:
    """Load a dataset by name (see module doc); ``scale`` in {none, standard, maxabs}."""
    if scale not in SCALINGS:
        raise ConfigError(f"problem.scale must be one of {SCALINGS}, got {scale!r}")
    A: np.ndarray | sp.csr_matrix
    if name in SKLEARN_SETS:
        A, y = _sklearn_set(name)
        b = _binary_labels(y if name == "breast_cancer" else y % 2, name)
    elif name == "synthetic":
        if n_samples < 1 or n_features < 1:
            raise ConfigError(f"synthetic dataset needs n_samples >= 1 and n_features >= 1, got "
                              f"{n_samples} and {n_features}")
        rng = generator(seed, 0, 0, Purpose.DATA)
        A = rng.standard_normal((n_samples, n_features))
        w = rng.standard_normal(n_features)
        b = np.where(A @ w + 0.5 * rng.standard_normal(n_samples) > 0, 1.0, -1.0)
    else:
        from sklearn.datasets import load_svmlight_file

        fname = name.removeprefix("libsvm:")
        path = find_data_file(fname, data_dir(directory))
        try:
            X, y = load_svmlight_file(str(path))
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"cannot read LIBSVM file {path}: {e}") from None
        A = X.tocsr()
        check_finite(A, y, f"LIBSVM file {path}")
        b = _binary_labels(np.asarray(y), name)
    with np.errstate(over="ignore", invalid="ignore"):
        A = _scaled(A, scale).astype(dtype)
    check_finite(A, b, f"dataset {name!r} after scale = {scale!r} and conversion to {dtype}")
    return Dataset(name=name, A=A, b=np.asarray(b, dtype=dtype))


def _scaled(A: np.ndarray | sp.csr_matrix, scale: str) -> np.ndarray | sp.csr_matrix:
    if scale == "none":
        return A
    if scale == "maxabs":
        m = np.asarray(abs(A).max(axis=0).todense() if sp.issparse(A) else np.abs(A).max(axis=0))
        m = np.where(m.ravel() > 0, m.ravel(), 1.0)
        return A @ sp.diags(1.0 / m) if sp.issparse(A) else A / m
    # standard: zero mean, unit variance per feature (densifies a sparse matrix)
    n, d = A.shape
    if sp.issparse(A) and n * d > DENSE_MAX_ENTRIES:
        raise DataError(f"problem.scale = 'standard' would make the sparse {n} x {d} feature "
                        f"matrix dense ({n * d * 8 / 2**30:.1f} GiB): use scale = 'maxabs' "
                        "(keeps it sparse) or 'none'")
    D = A.toarray() if sp.issparse(A) else A
    sd = D.std(axis=0)
    return (D - D.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def partition(n_samples: int, n_workers: int, mode: str = "contiguous",
              seed: int = 0, labels: np.ndarray | None = None) -> list[np.ndarray]:
    """Row indices of each worker's shard (list of n int64 arrays covering 0..N-1 once).

    ``contiguous``: N // n rows each in order, the last worker takes the remainder (EF21
    experiments). ``iid``: the same cut of a permutation drawn from (seed, SHARD).
    ``by_label``: the same cut of the rows sorted by ``labels`` (N,) (stable: file order within
    a label), each shard's rows in file order — the heterogeneous split where most workers see
    one class only (the decentralized papers' "sorted by label" setting).
    """
    if mode not in PARTITIONS:
        raise ConfigError(f"problem.shard must be one of {PARTITIONS}, got {mode!r}")
    if n_workers < 1:
        raise ConfigError(f"need at least one worker, got {n_workers}")
    per = n_samples // n_workers
    if per < 1:
        raise DataError(f"{n_samples} samples cannot be split over {n_workers} workers")
    if mode == "by_label":
        if labels is None or np.shape(labels) != (n_samples,):
            raise ConfigError(f"problem.shard = 'by_label' needs the {n_samples} labels")
        order = np.argsort(np.asarray(labels), kind="stable")
    elif mode == "iid":
        order = generator(seed, 0, 0, Purpose.SHARD).permutation(n_samples)
    else:
        order = np.arange(n_samples)
    cuts = [i * per for i in range(n_workers)] + [n_samples]
    return [order[cuts[i]:cuts[i + 1]] if mode == "contiguous"
            else np.sort(order[cuts[i]:cuts[i + 1]]) for i in range(n_workers)]
