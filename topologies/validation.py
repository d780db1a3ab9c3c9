"""Checks that a matrix is a valid gossip (mixing) matrix, with messages naming the entry.

The checks, in the order they run (the first failure raises :class:`TopologyError`):

1. 2-D and square;                       "W is not square: shape (3, 4)"
2. finite;                               "W has a NaN entry: W[1,2]=nan"
3. size equals the number of ranks;      "W is 6 x 6 but there are 4 ranks"
4. non-negative;                         "W has a negative entry: W[1,2]=-0.1"
5. symmetric (unless directed);          "W is not symmetric: W[2,5]=0.25 but W[5,2]=0.3"
6. rows sum to 1;                        "W row 3 sums to 0.9, not 1 ..."
7. columns sum to 1;                     "W column 3 sums to 1.1, not 1 ..."
8. pattern matches the graph (if given): off-diagonal W[i,j] > 0 exactly on the graph's edges
   and a positive diagonal;              "W[0,2]=0.1 but (0, 2) is not an edge of ring(8)"
9. connected (scipy.sparse.csgraph);     "W's graph is disconnected: 2 components; ..."
10. not periodic: a symmetric W with a zero diagonal on a bipartite graph has eigenvalue -1
   (rho = 1) and gossip never converges.

Sums and symmetry are compared with a tolerance ``tol`` that defaults to
:func:`default_tol` ``= 1e-10 * n`` (rounding grows with the number of terms in a row).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from .errors import TopologyError
from .graphs import Graph

__all__ = ["TOL_PER_NODE", "as_csr", "check_mixing_matrix", "default_tol"]

TOL_PER_NODE = 1e-10


def default_tol(n: int) -> float:
    """Absolute tolerance for row/column sums and symmetry of an n x n W: ``1e-10 * max(n, 1)``."""
    return TOL_PER_NODE * max(int(n), 1)


def _fmt(x: float) -> str:
    return f"{float(x):.6g}"


def _complex_entries(w: object) -> bool:
    try:
        return bool(np.iscomplexobj(w))
    except (TypeError, ValueError):
        return False


def as_csr(w: object) -> sp.csr_array:
    """Convert a dense array-like or a scipy sparse matrix/array to canonical ``float64`` CSR.

    Checks shape (2-D, square) and finiteness, the checks without which nothing else works.
    Explicit zeros are removed and indices sorted.

    Raises:
        TopologyError: not numeric, not 2-D, not square, or a NaN/inf entry.
    """
    if getattr(getattr(w, "dtype", None), "kind", "") == "c" or \
            (not sp.issparse(w) and _complex_entries(w)):
        raise TopologyError(f"W has complex entries (dtype {getattr(w, 'dtype', 'complex')}): a "
                            "mixing matrix is real; save W with real weights (e.g. W.real "
                            "after checking the imaginary part is 0)")
    try:
        if sp.issparse(w):
            m = sp.csr_array(w, dtype=np.float64)
        else:
            arr = np.asarray(w, dtype=np.float64)
            if arr.ndim != 2:
                raise TopologyError(f"W must be a 2-D matrix, got shape {arr.shape}")
            if arr.shape[0] != arr.shape[1]:
                raise TopologyError(f"W is not square: shape {arr.shape}")
            _check_finite_dense(arr)
            m = sp.csr_array(arr)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, TopologyError):
            raise
        raise TopologyError(f"W is not a numeric matrix: {exc}") from None
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise TopologyError(f"W is not square: shape {m.shape}")
    bad = np.flatnonzero(~np.isfinite(m.data))
    if bad.size:
        coo = m.tocoo()
        k = np.flatnonzero(~np.isfinite(coo.data))[0]
        i, j, v = coo.row[k], coo.col[k], coo.data[k]
        what = "a NaN" if np.isnan(v) else "an infinite"
        raise TopologyError(f"W has {what} entry: W[{i},{j}]={v}")
    m.eliminate_zeros()
    m.sort_indices()
    return m


def _check_finite_dense(arr: np.ndarray) -> None:
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        i, j = bad[0]
        v = arr[i, j]
        what = "a NaN" if np.isnan(v) else "an infinite"
        raise TopologyError(f"W has {what} entry: W[{i},{j}]={v}")


def _check_sums(m: sp.csr_array, axis: int, tol: float) -> None:
    sums = np.asarray(m.sum(axis=axis)).ravel()
    err = np.abs(sums - 1.0)
    bad = np.flatnonzero(err > tol)
    if bad.size:
        k = int(bad[np.argmax(err[bad])])
        what = "row" if axis == 1 else "column"
        more = f"; {bad.size} {what}s are off" if bad.size > 1 else ""
        raise TopologyError(f"W {what} {k} sums to {sums[k]:.12g}, not 1 (tolerance {tol:.3g}"
                            f"{more}); W must be doubly stochastic")


def _check_symmetric(m: sp.csr_array, tol: float) -> None:
    d = (m - m.T).tocoo()
    if d.nnz == 0:
        return
    k = int(np.argmax(np.abs(d.data)))
    if abs(d.data[k]) > tol:
        i, j = int(d.row[k]), int(d.col[k])
        raise TopologyError(f"W is not symmetric: W[{i},{j}]={_fmt(m[i, j])} but "
                            f"W[{j},{i}]={_fmt(m[j, i])}")


def _check_pattern(m: sp.csr_array, graph: Graph) -> None:
    n = m.shape[0]
    if graph.n != n:
        raise TopologyError(f"W is {n} x {n} but the graph {graph.name} has {graph.n} nodes")
    diag = m.diagonal()
    bad = np.flatnonzero(diag <= 0)
    if bad.size:
        i = int(bad[0])
        raise TopologyError(f"W[{i},{i}]={_fmt(diag[i])} but the diagonal must be positive: "
                            f"every node keeps a share of its own value (self-loop of the graph)")
    off = m.copy()
    off.setdiag(0)
    off.eliminate_zeros()
    support = (off > 0).astype(np.int8)
    adj = graph.adjacency.astype(np.int8)
    diff = (support - adj).tocoo()
    diff.eliminate_zeros()
    if diff.nnz:
        order = np.lexsort((diff.col, diff.row))
        k = order[0]
        i, j = int(diff.row[k]), int(diff.col[k])
        if diff.data[k] > 0:
            raise TopologyError(f"W[{i},{j}]={_fmt(m[i, j])} but ({i}, {j}) is not an edge of "
                                f"{graph.name}")
        raise TopologyError(f"W[{i},{j}]=0 but ({i}, {j}) is an edge of {graph.name}; every "
                            "edge needs a positive weight")


def _check_connected(m: sp.csr_array, symmetric: bool) -> None:
    n = m.shape[0]
    if n <= 1:
        return
    k, labels = csgraph.connected_components(m, directed=not symmetric, connection="strong")
    if k > 1:
        other = int(np.flatnonzero(labels != labels[0])[0])
        sizes = np.bincount(labels)
        raise TopologyError(f"W's graph is disconnected: {k} components (sizes "
                            f"{sorted(sizes.tolist(), reverse=True)[:5]}); node 0 and node "
                            f"{other} are not linked by any path")


def _check_aperiodic(m: sp.csr_array) -> None:
    """Symmetric, connected W: eigenvalue -1 iff zero diagonal and bipartite support."""
    n = m.shape[0]
    if n <= 1 or (m.diagonal() > 0).any():
        return
    order, pred = csgraph.breadth_first_order(m, 0, directed=False, return_predecessors=True)
    depth = np.zeros(n, dtype=np.int64)
    for v in order[1:]:
        depth[v] = depth[pred[v]] + 1
    coo = m.tocoo()
    if ((depth[coo.row] - depth[coo.col]) % 2 == 0).any():
        return  # an odd cycle: not bipartite
    raise TopologyError("W has eigenvalue -1 (rho = 1): its diagonal is zero and its graph is "
                        "bipartite, so gossip oscillates instead of converging; give nodes a "
                        "self-weight, e.g. the lazy variant (I + W)/2")


def check_mixing_matrix(w: object, *, n_ranks: int | None = None, graph: Graph | None = None,
                        tol: float | None = None, symmetric: bool = True,
                        connected: bool = True) -> sp.csr_array:
    """Validate a mixing matrix; return it as canonical ``float64`` CSR.

    Args:
        w: dense ``(n, n)`` array-like or scipy sparse matrix.
        n_ranks: if given, W must be ``n_ranks x n_ranks``.
        graph: if given, the off-diagonal support of W must equal the graph's edges and the
            diagonal must be positive.
        tol: absolute tolerance for sums and symmetry; default :func:`default_tol` (n).
        symmetric: require symmetry (False for directed schedules such as one-peer exponential).
        connected: require a connected support graph (strongly connected if not symmetric).
    Raises:
        TopologyError: the first failed check, naming the offending entry.
    """
    m = as_csr(w)
    n = m.shape[0]
    if n == 0:
        raise TopologyError("W is empty (0 x 0)")
    if n_ranks is not None and n != n_ranks:
        raise TopologyError(f"W is {n} x {n} but there are {n_ranks} ranks")
    neg = np.flatnonzero(m.data < 0)
    if neg.size:
        coo = m.tocoo()
        k = np.flatnonzero(coo.data < 0)[0]
        raise TopologyError(f"W has a negative entry: W[{coo.row[k]},{coo.col[k]}]="
                            f"{_fmt(coo.data[k])}")
    tol = default_tol(n) if tol is None else float(tol)
    if symmetric:
        _check_symmetric(m, tol)
    _check_sums(m, 1, tol)
    _check_sums(m, 0, tol)
    if graph is not None:
        _check_pattern(m, graph)
    if connected:
        _check_connected(m, symmetric)
        if symmetric:
            _check_aperiodic(m)
    return m
