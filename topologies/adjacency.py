"""The :class:`Graph` value: an undirected simple graph on nodes ``0 .. n-1``.

A :class:`Graph` is an immutable value: the number of nodes ``n`` and a sorted array of
undirected edges ``(i, j)`` with ``i < j``. Self-loops are never stored: every node implicitly
keeps a share of its own value (the diagonal of the mixing matrix), as in D-PSGD.
Its generators are in :mod:`.graphs` (deterministic) and :mod:`.sampled` (random, from a file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from .errors import TopologyError

__all__ = ["Graph"]


def _check_n(n: int, kind: str, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise TopologyError(f"{kind}: n must be an integer, got {n!r}")
    n = int(n)
    if n < minimum:
        raise TopologyError(f"{kind}: n must be >= {minimum}, got n = {n}")
    return n


@dataclass(frozen=True, eq=False)
class Graph:
    """An undirected simple graph.

    Attributes:
        n: number of nodes (>= 1).
        edges: ``int64`` array of shape ``(m, 2)``; each row ``(i, j)`` has ``i < j``; rows are
            unique and sorted lexicographically. Read-only.
        name: a short description, e.g. ``"ring(8)"``.

    Build one with :meth:`Graph.from_edges` (which sorts and de-duplicates) or a generator.
    """

    n: int
    edges: np.ndarray
    name: str = field(default="graph")

    def __post_init__(self) -> None:
        n = _check_n(self.n, "graph")
        e = np.asarray(self.edges, dtype=np.int64).reshape(-1, 2)
        if e.size:
            bad = np.flatnonzero((e < 0).any(axis=1) | (e >= n).any(axis=1))
            if bad.size:
                i, j = e[bad[0]]
                raise TopologyError(f"edge ({i}, {j}) is out of range for n = {n} nodes")
            loops = np.flatnonzero(e[:, 0] == e[:, 1])
            if loops.size:
                i = e[loops[0], 0]
                raise TopologyError(f"self-loop ({i}, {i}) in the edge list; self-weights are "
                                    "implicit and must not be listed as edges")
            if (e[:, 0] > e[:, 1]).any():
                raise TopologyError("Graph edges must have i < j; use Graph.from_edges")
            order = np.lexsort((e[:, 1], e[:, 0]))
            if not np.array_equal(order, np.arange(e.shape[0])):
                raise TopologyError("Graph edges must be sorted; use Graph.from_edges")
            dup = np.flatnonzero((np.diff(e, axis=0) == 0).all(axis=1))
            if dup.size:
                i, j = e[dup[0]]
                raise TopologyError(f"duplicate edge ({i}, {j}); use Graph.from_edges")
        e = e.copy()
        e.setflags(write=False)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "edges", e)

    @classmethod
    def from_edges(cls, n: int, edges: np.ndarray | list[tuple[int, int]],
                   name: str = "graph") -> Graph:
        """Build a graph from edges in any orientation; duplicates are merged.

        Args:
            n: number of nodes.
            edges: array-like of shape ``(m, 2)`` of node ids in ``[0, n)``.
            name: description.
        Raises:
            TopologyError: on out-of-range ids or self-loops.
        """
        e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        if e.size:
            loops = np.flatnonzero(e[:, 0] == e[:, 1])
            if loops.size:
                i = e[loops[0], 0]
                raise TopologyError(f"self-loop ({i}, {i}) in the edge list; self-weights are "
                                    "implicit and must not be listed as edges")
            e = np.sort(e, axis=1)
            e = np.unique(e, axis=0)
        return cls(n=n, edges=e, name=name)

    @classmethod
    def from_adjacency(cls, a: np.ndarray | sp.sparray | sp.spmatrix,
                       name: str = "graph") -> Graph:
        """The support graph of a square matrix: edge (i, j) iff ``a[i,j] != 0 or a[j,i] != 0``
        for ``i != j`` (the diagonal is ignored)."""
        m = sp.coo_array(a)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise TopologyError(f"adjacency must be square, got shape {m.shape}")
        keep = (m.row != m.col) & (m.data != 0)
        e = np.stack([m.row[keep], m.col[keep]], axis=1)
        return cls.from_edges(m.shape[0], e, name=name)

    @property
    def num_edges(self) -> int:
        """Number of undirected edges m."""
        return int(self.edges.shape[0])

    @cached_property
    def adjacency(self) -> sp.csr_array:
        """Symmetric 0/1 adjacency, ``float64`` CSR of shape ``(n, n)``, zero diagonal."""
        i, j = self.edges[:, 0], self.edges[:, 1]
        rows = np.concatenate([i, j])
        cols = np.concatenate([j, i])
        data = np.ones(rows.size, dtype=np.float64)
        a = sp.csr_array((data, (rows, cols)), shape=(self.n, self.n))
        a.sort_indices()
        return a

    @cached_property
    def degrees(self) -> np.ndarray:
        """Degree of every node, ``int64`` array of shape ``(n,)``."""
        d = np.bincount(self.edges.ravel(), minlength=self.n).astype(np.int64)
        d.setflags(write=False)
        return d

    def neighbors(self, i: int) -> np.ndarray:
        """Neighbours of node ``i`` in ascending order (``int64``), excluding ``i``."""
        a = self.adjacency
        return a.indices[a.indptr[i]:a.indptr[i + 1]].astype(np.int64)

    def components(self) -> tuple[int, np.ndarray]:
        """``(count, labels)`` of the connected components (scipy.sparse.csgraph)."""
        k, labels = csgraph.connected_components(self.adjacency, directed=False)
        return int(k), labels

    def is_connected(self) -> bool:
        """True iff the graph has one connected component."""
        return self.components()[0] == 1

    def __repr__(self) -> str:
        return f"Graph({self.name}, n={self.n}, edges={self.num_edges})"
