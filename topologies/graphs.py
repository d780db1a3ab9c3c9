"""Undirected simple graphs on nodes ``0 .. n-1`` and their generators.

A :class:`Graph` is an immutable value: the number of nodes ``n`` and a sorted array of
undirected edges ``(i, j)`` with ``i < j``. Self-loops are never stored: every node implicitly
keeps a share of its own value (the diagonal of the mixing matrix), as in D-PSGD.

Generators (see ``docs/topologies.md`` for the equations):

========================  ===============================================================
``ring(n)``               i -- i+1 (mod n)
``torus(n, rows, cols)``  2-D torus, default near-square ``rows x cols = n``
``hypercube(n)``          i -- i XOR 2^b, n a power of two
``exponential(n)``        i -- i +- 2^k (mod n), 2^k < n
``complete(n)``           every pair
``star(n, center)``       center -- every other node
``random_regular``        uniform-ish random d-regular graph (seeded, retried until connected)
``erdos_renyi``           G(n, p) (seeded, retried until connected)
``edge_list(n, path)``    edges read from a text file
========================  ===============================================================

:func:`make_graph` builds any of them by name (the registry used by configs and the CLI).
:class:`Graph` is defined in :mod:`.adjacency`, the random and file graphs in :mod:`.sampled`;
all are importable from here.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable

import numpy as np

from .adjacency import Graph, _check_n
from .errors import TopologyError
from .sampled import edge_list, erdos_renyi, random_regular, read_edge_list

__all__ = [
    "GRAPH_ALIASES",
    "GRAPH_GENERATORS",
    "Graph",
    "complete",
    "edge_list",
    "erdos_renyi",
    "exponential",
    "hypercube",
    "make_graph",
    "near_square",
    "random_regular",
    "read_edge_list",
    "ring",
    "star",
    "torus",
]


# --------------------------------------------------------------------------- generators


def ring(n: int) -> Graph:
    """Cycle i -- (i+1) mod n. n = 1: no edge; n = 2: a single edge."""
    n = _check_n(n, "ring")
    i = np.arange(n)
    e = np.stack([i, (i + 1) % n], axis=1) if n >= 2 else np.empty((0, 2), np.int64)
    return Graph.from_edges(n, e, name=f"ring({n})")


def near_square(n: int) -> tuple[int, int]:
    """``(rows, cols)`` with ``rows * cols = n``, ``rows <= cols`` and rows as large as possible
    (so a prime n gives ``1 x n``, i.e. a ring)."""
    n = _check_n(n, "torus")
    r = math.isqrt(n)
    while n % r:
        r -= 1
    return r, n // r


def torus(n: int, rows: int | None = None, cols: int | None = None) -> Graph:
    """2-D torus: node ``r*cols + c`` linked to its four wrap-around grid neighbours.

    Default shape is :func:`near_square`. A side of length 1 adds no edges along it and a side
    of length 2 adds one (simple graph), so degrees are 4 only when both sides are >= 3.
    """
    n = _check_n(n, "torus")
    if rows is None and cols is None:
        rows, cols = near_square(n)
    elif rows is None or cols is None:
        given = rows if rows is not None else cols
        name = "rows" if rows is not None else "cols"
        if isinstance(given, bool) or not isinstance(given, int | np.integer) or given < 1:
            raise TopologyError(f"torus: {name} must be a positive integer, got {given!r}")
        if n % given:
            raise TopologyError(f"torus: {name} = {given} does not divide n = {n}")
        other = n // int(given)
        rows, cols = (int(given), other) if rows is not None else (other, int(given))
    if not (isinstance(rows, int | np.integer) and isinstance(cols, int | np.integer)) \
            or rows < 1 or cols < 1 or rows * cols != n:
        raise TopologyError(f"torus: rows x cols = {rows} x {cols} does not equal n = {n}")
    rows, cols = int(rows), int(cols)
    idx = np.arange(n).reshape(rows, cols)
    parts = []
    if rows > 1:
        parts.append(np.stack([idx.ravel(), np.roll(idx, -1, axis=0).ravel()], axis=1))
    if cols > 1:
        parts.append(np.stack([idx.ravel(), np.roll(idx, -1, axis=1).ravel()], axis=1))
    e = np.concatenate(parts) if parts else np.empty((0, 2), np.int64)
    return Graph.from_edges(n, e, name=f"torus({rows}x{cols})")


def hypercube(n: int) -> Graph:
    """Hypercube: i -- i XOR 2^b for b < log2(n). n must be a power of two."""
    n = _check_n(n, "hypercube")
    if n & (n - 1):
        raise TopologyError(f"hypercube: n must be a power of two, got n = {n} "
                            f"(nearest: {1 << (n.bit_length() - 1)} or {1 << n.bit_length()})")
    i = np.arange(n)
    parts = [np.stack([i, i ^ (1 << b)], axis=1) for b in range(n.bit_length() - 1)]
    e = np.concatenate(parts) if parts else np.empty((0, 2), np.int64)
    return Graph.from_edges(n, e, name=f"hypercube({n})")


def exponential(n: int) -> Graph:
    """Static exponential graph: i -- (i +- 2^k) mod n for every k with 2^k < n.

    The undirected version of Ying et al. (2021); degree about ``2*ceil(log2 n)`` (less where
    ``+2^k`` and ``-2^k`` coincide).
    """
    n = _check_n(n, "exponential")
    i = np.arange(n)
    parts = []
    k = 1
    while k < n:
        parts.append(np.stack([i, (i + k) % n], axis=1))
        k <<= 1
    e = np.concatenate(parts) if parts else np.empty((0, 2), np.int64)
    return Graph.from_edges(n, e, name=f"exponential({n})")


def complete(n: int) -> Graph:
    """Complete graph: every pair i < j."""
    n = _check_n(n, "complete")
    i, j = np.triu_indices(n, k=1)
    return Graph.from_edges(n, np.stack([i, j], axis=1), name=f"complete({n})")


def star(n: int, center: int = 0) -> Graph:
    """Star: ``center`` -- every other node."""
    n = _check_n(n, "star")
    if not 0 <= center < n:
        raise TopologyError(f"star: center = {center} is out of range for n = {n}")
    others = np.array([i for i in range(n) if i != center], dtype=np.int64)
    e = np.stack([np.full(others.size, center), others], axis=1)
    return Graph.from_edges(n, e, name=f"star({n})")


# --------------------------------------------------------------------------- registry

GRAPH_GENERATORS: dict[str, Callable[..., Graph]] = {
    "ring": ring,
    "torus": torus,
    "hypercube": hypercube,
    "exponential": exponential,
    "complete": complete,
    "star": star,
    "random-regular": random_regular,
    "erdos-renyi": erdos_renyi,
    "edge-list": edge_list,
}

GRAPH_ALIASES: dict[str, str] = {
    "cycle": "ring",
    "torus2d": "torus",
    "torus-2d": "torus",
    "grid": "torus",
    "exp": "exponential",
    "full": "complete",
    "fully-connected": "complete",
    "regular": "random-regular",
    "er": "erdos-renyi",
    "gnp": "erdos-renyi",
    "file": "edge-list",
    "edges": "edge-list",
}


def canonical_name(name: str, aliases: dict[str, str], known: Iterable[str], what: str) -> str:
    """Canonical registry name (case-insensitive, ``_`` == ``-``, aliases resolved) or a
    :class:`TopologyError` ``unknown <what> <name>; known: ...``."""
    key = name.strip().lower().replace("_", "-")
    key = aliases.get(key, key)
    if key not in known:
        raise TopologyError(f"unknown {what} {name!r}; known: {', '.join(known)}")
    return key


def canonical_kind(kind: str) -> str:
    """Canonical registry name of a graph kind."""
    return canonical_name(kind, GRAPH_ALIASES, GRAPH_GENERATORS, "graph kind")


def _call_with_options(fn: Callable[..., Graph], what: str, n: int, opts: dict[str, object]
                       ) -> Graph:
    params = inspect.signature(fn).parameters
    allowed = [p for p in params if p != "n"]
    for key in opts:
        if key not in allowed:
            raise TopologyError(f"unknown option {key!r} for {what}; it takes: "
                                f"{', '.join(allowed) or 'no options'}")
    return fn(n, **opts)


def make_graph(kind: str, n: int, **opts: object) -> Graph:
    """Build a graph by registry name, e.g. ``make_graph("torus", 12, rows=3)``.

    Names: ring, torus, hypercube, exponential, complete, star, random-regular (degree, seed,
    max_tries), erdos-renyi (p, seed, max_tries), edge-list (path); see ``GRAPH_ALIASES``.
    Options left as None are dropped (so CLI defaults pass through).
    """
    key = canonical_kind(kind)
    opts = {k: v for k, v in opts.items() if v is not None}
    return _call_with_options(GRAPH_GENERATORS[key], f"graph {key!r}", n, opts)
