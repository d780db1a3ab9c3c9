"""Weighting schemes: a :class:`Graph` to a symmetric doubly stochastic :class:`MixingMatrix`.

* Metropolis–Hastings: ``W_ij = 1 / (1 + max(d_i, d_j))`` on edges, ``W_ii = 1 - sum_j W_ij``.
* Max-degree (uniform): ``W_ij = 1 / (d_max + 1)`` on edges, ``W_ii = 1 - d_i / (d_max + 1)``.
  On the complete graph this is ``W = 11^T / n`` (rho = 0).
* Lazy: ``(I + W) / 2`` of either.
* Explicit: W read from a ``.npy``, ``.npz`` (scipy sparse) or text file.

Both graph schemes give a positive diagonal, so the result is primitive on a connected graph.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from .errors import TopologyError
from .graphs import Graph, canonical_name
from .mixing import MixingMatrix
from .validation import as_csr

__all__ = [
    "WEIGHT_ALIASES",
    "WEIGHT_SCHEMES",
    "from_file",
    "lazy",
    "load_matrix",
    "make_weights",
    "max_degree",
    "metropolis_hastings",
]


def _from_edge_weights(graph: Graph, w_edge: np.ndarray, scheme: str) -> MixingMatrix:
    """Symmetric W with weight ``w_edge[k]`` on edge k and the diagonal filling rows to 1."""
    n = graph.n
    i, j = graph.edges[:, 0], graph.edges[:, 1]
    row_off = np.bincount(i, weights=w_edge, minlength=n) + np.bincount(j, weights=w_edge,
                                                                        minlength=n)
    diag = 1.0 - row_off
    rows = np.concatenate([i, j, np.arange(n)])
    cols = np.concatenate([j, i, np.arange(n)])
    data = np.concatenate([w_edge, w_edge, diag])
    w = sp.csr_array((data, (rows, cols)), shape=(n, n))
    return MixingMatrix(w, graph=graph, name=f"{graph.name}/{scheme}")


def metropolis_hastings(graph: Graph) -> MixingMatrix:
    """Metropolis–Hastings weights ``W_ij = 1 / (1 + max(d_i, d_j))`` for each edge (i, j)."""
    d = graph.degrees
    i, j = graph.edges[:, 0], graph.edges[:, 1]
    w_edge = 1.0 / (1.0 + np.maximum(d[i], d[j]).astype(np.float64))
    return _from_edge_weights(graph, w_edge, "metropolis")


def max_degree(graph: Graph) -> MixingMatrix:
    """Uniform max-degree weights ``W_ij = 1 / (d_max + 1)`` for each edge (i, j)."""
    dmax = int(graph.degrees.max()) if graph.n else 0
    w_edge = np.full(graph.num_edges, 1.0 / (dmax + 1.0))
    return _from_edge_weights(graph, w_edge, "max-degree")


def lazy(mixing: MixingMatrix) -> MixingMatrix:
    """``(I + W) / 2``; see :meth:`MixingMatrix.lazy`."""
    return mixing.lazy()


def load_matrix(path: str | os.PathLike[str]) -> sp.csr_array:
    """Read W from ``.npy`` (dense), ``.npz`` (``scipy.sparse.save_npz``) or a text file
    (``numpy.loadtxt``: whitespace or commas, ``#`` comments).

    Raises:
        TopologyError: missing or unreadable file (shape problems are reported by validation).
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise TopologyError(f"W file not found: {p}")
    try:
        if p.endswith(".npy"):
            arr = np.load(p, allow_pickle=False)
        elif p.endswith(".npz"):
            return as_csr(sp.load_npz(p))
        else:
            with open(p, encoding="utf-8") as fh:
                text = fh.read()
            delim = "," if "," in text else None
            arr = np.loadtxt(p, delimiter=delim, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise TopologyError(f"cannot read W from {p}: {exc}") from None
    if arr.ndim != 2:
        raise TopologyError(f"W in {p} must be a 2-D matrix, got shape {arr.shape}")
    if arr.shape[0] != arr.shape[1]:
        raise TopologyError(f"W in {p} is not square: shape {arr.shape}")
    return as_csr(arr)


def from_file(path: str | os.PathLike[str], n_ranks: int | None = None,
              tol: float | None = None) -> MixingMatrix:
    """An explicit, validated W from a file (see :func:`load_matrix`).

    Args:
        path: ``.npy``, ``.npz`` or text file.
        n_ranks: if given, W must be ``n_ranks x n_ranks``.
        tol: tolerance for sums and symmetry (default ``1e-10 * n``).
    Raises:
        TopologyError: unreadable file or any validation failure.
    """
    w = load_matrix(path)
    m = MixingMatrix(w, graph=None, name=f"file({os.path.basename(os.fspath(path))})")
    return m.validate(n_ranks, tol=tol)


WEIGHT_SCHEMES: dict[str, Callable[[Graph], MixingMatrix]] = {
    "metropolis": metropolis_hastings,
    "max-degree": max_degree,
    "lazy-metropolis": lambda g: metropolis_hastings(g).lazy(),
    "lazy-max-degree": lambda g: max_degree(g).lazy(),
}

WEIGHT_ALIASES: dict[str, str] = {
    "mh": "metropolis",
    "metropolis-hastings": "metropolis",
    "uniform": "max-degree",
    "maxdegree": "max-degree",
    "lazy": "lazy-metropolis",
    "lazy-mh": "lazy-metropolis",
    "lazy-uniform": "lazy-max-degree",
}


def canonical_scheme(scheme: str) -> str:
    """Canonical name of a weighting scheme (case-insensitive, ``_`` == ``-``)."""
    return canonical_name(scheme, WEIGHT_ALIASES, WEIGHT_SCHEMES, "weights")


def make_weights(scheme: str, graph: Graph) -> MixingMatrix:
    """Apply a weighting scheme by name: metropolis, max-degree, lazy-metropolis,
    lazy-max-degree (aliases in ``WEIGHT_ALIASES``)."""
    return WEIGHT_SCHEMES[canonical_scheme(scheme)](graph)
