"""Graphs that are sampled (seeded) or read from a file: ``random_regular``, ``erdos_renyi``,
``read_edge_list`` and its registry form ``edge_list``. :func:`.graphs.make_graph` builds them by
name; see ``docs/topologies.md`` for the equations."""

from __future__ import annotations

import math
import os

import numpy as np

from .adjacency import Graph, _check_n
from .errors import TopologyError

__all__ = ["edge_list", "erdos_renyi", "random_regular", "read_edge_list"]


def _pair_stubs(n: int, d: int, rng: np.random.Generator) -> set[tuple[int, int]] | None:
    """One attempt of the stub-pairing algorithm for a simple d-regular graph.

    Stubs (d per node) are shuffled and paired; pairs forming a self-loop or a repeated edge go
    back to the pool, which is reshuffled until empty. Returns None when no valid pair is left.
    """
    edges: set[tuple[int, int]] = set()
    stubs = np.repeat(np.arange(n, dtype=np.int64), d)
    while stubs.size:
        rng.shuffle(stubs)
        left: list[int] = []
        for u, v in zip(stubs[0::2].tolist(), stubs[1::2].tolist(), strict=True):
            if u > v:
                u, v = v, u
            if u != v and (u, v) not in edges:
                edges.add((u, v))
            else:
                left += [u, v]
        if not left:
            break
        nodes = sorted(set(left))
        if not any((a, b) not in edges for ai, a in enumerate(nodes) for b in nodes[ai + 1:]):
            return None
        stubs = np.asarray(left, dtype=np.int64)
    return edges


def random_regular(n: int, degree: int | None = None, seed: int = 0,
                   max_tries: int = 100) -> Graph:
    """Random simple ``degree``-regular graph, retried until connected.

    Args:
        n: nodes.
        degree: d with ``0 <= d < n`` and ``n*d`` even; default ``min(4, n - 1)``.
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same graph.
        max_tries: attempts before giving up.
    Raises:
        TopologyError: infeasible (n, d), or no connected graph after ``max_tries`` attempts.
    """
    n = _check_n(n, "random-regular")
    d = min(4, n - 1) if degree is None else degree
    if isinstance(d, bool) or not isinstance(d, int | np.integer) or not 0 <= d < n:
        raise TopologyError(f"random-regular: degree must satisfy 0 <= degree < n = {n}, "
                            f"got degree = {d!r}")
    d = int(d)
    if (n * d) % 2:
        raise TopologyError(f"random-regular: n * degree must be even, got n = {n}, "
                            f"degree = {d}")
    if (d == 0 and n > 1) or (d == 1 and n > 2):
        raise TopologyError(f"random-regular: a {d}-regular graph on n = {n} nodes is never "
                            "connected; use degree >= 2 (>= 3 for large n)")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        edges = _pair_stubs(n, d, rng)
        if edges is None:
            continue
        g = Graph.from_edges(n, np.array(sorted(edges), dtype=np.int64).reshape(-1, 2),
                             name=f"random-regular({n}, d={d}, seed={seed})")
        if g.is_connected():
            return g
    raise TopologyError(f"random-regular: no connected {d}-regular graph on n = {n} nodes "
                        f"after max_tries = {max_tries} attempts (seed = {seed}); "
                        "use a larger degree or max_tries")


def erdos_renyi(n: int, p: float | None = None, seed: int = 0, max_tries: int = 100) -> Graph:
    """Erdős–Rényi G(n, p), retried until connected.

    Args:
        n: nodes.
        p: edge probability in [0, 1]; default ``min(1, 2 ln(n) / n)`` (twice the connectivity
            threshold).
        seed: seed of ``numpy.random.default_rng``.
        max_tries: attempts before giving up.
    Raises:
        TopologyError: p out of range, or no connected sample after ``max_tries`` attempts.
    """
    n = _check_n(n, "erdos-renyi")
    if p is None:
        p = 1.0 if n <= 2 else min(1.0, 2.0 * math.log(n) / n)
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise TopologyError(f"erdos-renyi: p must be in [0, 1], got p = {p}")
    rng = np.random.default_rng(seed)
    pairs = n * (n - 1) // 2
    # first linear index of row i in the row-major upper triangle (i < j)
    starts = np.arange(n, dtype=np.int64) * (2 * n - np.arange(n, dtype=np.int64) - 1) // 2
    for _ in range(max_tries):
        # G(n, p): the edge count is Binomial(pairs, p) and, given it, the edge set is uniform;
        # O(m) memory instead of O(n^2).
        m = int(rng.binomial(pairs, p))
        k = np.sort(rng.choice(pairs, size=m, replace=False)) if m else np.empty(0, np.int64)
        i = np.searchsorted(starts, k, side="right") - 1
        j = k - starts[i] + i + 1
        g = Graph(n=n, edges=np.stack([i, j], axis=1).astype(np.int64),
                  name=f"erdos-renyi({n}, p={p:g}, seed={seed})")
        if g.is_connected():
            return g
    raise TopologyError(f"erdos-renyi: no connected G(n = {n}, p = {p:g}) after max_tries = "
                        f"{max_tries} attempts (seed = {seed}); the connectivity threshold is "
                        f"p ~ ln(n)/n = {math.log(max(n, 2)) / n:.3g}")


def read_edge_list(path: str | os.PathLike[str], n: int | None = None) -> Graph:
    """Read an undirected edge list: one ``i j`` pair per line (whitespace or commas).

    ``#`` starts a comment; blank lines are skipped; a third column (a weight) is ignored
    because weights come from the weighting scheme. Both orientations of an edge may appear.

    Args:
        path: text file.
        n: number of nodes; default ``1 + max node id``.
    Raises:
        TopologyError: naming the file and line of a malformed line, a self-loop or an id
            outside ``[0, n)``; or an empty file with n unknown.
    """
    pairs: list[tuple[int, int]] = []
    lines: list[int] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = raw.split("#", 1)[0].replace(",", " ").split()
            if not text:
                continue
            if len(text) not in (2, 3):
                raise TopologyError(f"{path} line {lineno}: expected 'i j' (optionally a weight),"
                                    f" got {raw.strip()!r}")
            try:
                i, j = int(text[0]), int(text[1])
            except ValueError:
                raise TopologyError(f"{path} line {lineno}: node ids must be integers, got "
                                    f"{raw.strip()!r}") from None
            if i == j:
                raise TopologyError(f"{path} line {lineno}: self-loop ({i}, {j}); self-weights "
                                    "are implicit")
            if i < 0 or j < 0:
                raise TopologyError(f"{path} line {lineno}: negative node id in ({i}, {j})")
            pairs.append((i, j))
            lines.append(lineno)
    if n is None:
        if not pairs:
            raise TopologyError(f"{path}: no edges and no n given")
        n = 1 + max(max(p) for p in pairs)
    n = _check_n(n, "edge-list")
    for (i, j), lineno in zip(pairs, lines, strict=True):
        if i >= n or j >= n:
            raise TopologyError(f"{path} line {lineno}: node {max(i, j)} is out of range for "
                                f"n = {n} nodes")
    base = os.path.basename(os.fspath(path))
    return Graph.from_edges(n, np.array(pairs, dtype=np.int64).reshape(-1, 2),
                            name=f"edge-list({base})")


def edge_list(n: int, path: str | os.PathLike[str]) -> Graph:
    """Registry form of :func:`read_edge_list` with n given first."""
    return read_edge_list(path, n)
