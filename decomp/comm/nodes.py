"""The node layout of ``aggregation = "tree"``: which ranks share a node (and its memory).

The tree's node-aware split (:mod:`decomp.comm.tree`) sums within each node first, then over
the nodes' first ranks; its grouping — and so the last bit of every sum — is a function of the
layout, which the reference (decomp.sim) takes as an input too. The layout comes from, in
order:

1. a layout given in the process (:func:`use_layout`: ``decomp sim --node-layout``, which
   also reads the one a run folder recorded), then ``DECOMP_NODE_LAYOUT`` (environment):
   ``"4"`` — nodes of 4 consecutive ranks, the last one shorter if 4 does not divide n — or
   ``"3,2,3"`` — the node sizes, consecutive ranks, summing to n — or ``"flat"`` (no split);
   a recorded layout may also be a list of each node's ranks. It overrides what MPI says, for
   tests on one machine and to make ``decomp sim`` reproduce a multi-node run;
2. MPI (the MPI transport only, without the variable): ``MPI_Comm_split_type(
   COMM_TYPE_SHARED)`` — the ranks that share memory are a node;
3. else (decomp.sim, the thread transport): flat, the same grouping as one node.

The node count also decides ``aggregation = "auto"`` (the default): the tree on more than one
node, the gather on one (:func:`decomp.comm.tree.resolve_aggregation`). ``decomp run`` records
the layout it found (:func:`found`, :func:`describe`) in ``summary.json`` (``run.node_layout``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from decomp.errors import ConfigError

__all__ = ["ENV", "Nodes", "count_env", "describe", "found", "from_env", "from_mpi",
           "parse_layout", "use_layout"]

#: the environment variable that sets the node layout
ENV = "DECOMP_NODE_LAYOUT"

Nodes = tuple[tuple[int, ...], ...]


#: the layout :func:`use_layout` gives (None: none, read the environment)
_GIVEN: list[Any] = [None]


@contextmanager
def use_layout(layout: Any) -> Iterator[None]:
    """Within the block, the node layout is ``layout`` (the text of :data:`ENV`, or a list of
    each node's ranks as ``summary.json`` records it), whatever :data:`ENV` says."""
    old, _GIVEN[0] = _GIVEN[0], layout
    try:
        yield
    finally:
        _GIVEN[0] = old


def _explicit(nodes: Any, n: int) -> Nodes | None:
    """A list of each node's ranks, checked: every rank 0..n-1 exactly once."""
    try:
        out = tuple(sorted((tuple(sorted(int(r) for r in m)) for m in nodes),
                           key=lambda m: m[0] if m else -1))
    except (TypeError, ValueError):
        out = ()
    if sorted(r for m in out for r in m) != list(range(n)) or any(not m for m in out):
        raise ConfigError(f"node layout {nodes!r}: each node's ranks must together be the "
                          f"ranks 0..{n - 1} once each (this run has {n}); give the layout "
                          "of a run with as many ranks")
    return out


def parse_layout(text: Any, n: int) -> Nodes | None:
    """The layout ``text`` (module doc) for n ranks: tuples of ranks, None for flat."""
    if isinstance(text, (list, tuple)):
        return _explicit(text, n)
    t = str(text).strip().lower()
    if t in ("", "flat"):
        return None
    what = f"node layout {text!r} ({ENV} or decomp sim --node-layout)"
    try:
        sizes = [int(s) for s in t.split(",")]
    except ValueError:
        raise ConfigError(f"{what}: give ranks per node ('4'), the node sizes "
                          "('3,2,3', consecutive ranks) or 'flat'") from None
    if any(s < 1 for s in sizes):
        raise ConfigError(f"{what}: node sizes must be >= 1")
    if len(sizes) == 1:
        k = sizes[0]
        sizes = [min(k, n - a) for a in range(0, n, k)]
    elif sum(sizes) != n:
        raise ConfigError(f"{what}: the node sizes add up to {sum(sizes)}, but the "
                          f"run has {n} ranks (give sizes summing to {n}, or one number: "
                          "ranks per node)")
    out, a = [], 0
    for s in sizes:
        out.append(tuple(range(a, a + s)))
        a += s
    return tuple(out)


def _given_text() -> Any:
    """The layout :func:`use_layout` gives, else ``DECOMP_NODE_LAYOUT`` (None: neither)."""
    return _GIVEN[0] if _GIVEN[0] is not None else os.environ.get(ENV)


def from_env(n: int) -> Nodes | None:
    """The layout given (:func:`use_layout`, else ``DECOMP_NODE_LAYOUT``) for n ranks (None:
    none, or flat)."""
    text = _given_text()
    return None if text is None else parse_layout(text, n)


def count_env(n: int) -> int:
    """Nodes n ranks span by the given layout (1 when none or flat; one rank per node: n):
    what ``aggregation = "auto"`` decides by outside MPI (decomp.sim, the thread
    transport)."""
    text = _given_text()
    if text is None:
        return 1
    nodes = parse_layout(text, n)
    return 1 if nodes is None else len(nodes)


def found(comm: Any) -> tuple[Nodes, str]:
    """(every node's ranks, where the layout came from: "DECOMP_NODE_LAYOUT" or
    "MPI_Comm_split_type") of ``comm`` — one-rank nodes included (collective)."""
    from mpi4py import MPI

    n = comm.Get_size()
    if os.environ.get(ENV) is not None:
        nodes = from_env(n)
        return ((tuple(range(n)),) if nodes is None else nodes), ENV  # None: "flat", one node
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        first = local.allreduce(comm.Get_rank(), op=MPI.MIN)  # the node's id: its first rank
    finally:
        local.Free()
    ids = comm.allgather(first)
    groups: dict[int, list[int]] = {}
    for r, f in enumerate(ids):
        groups.setdefault(f, []).append(r)
    return tuple(tuple(v) for _, v in sorted(groups.items())), "MPI_Comm_split_type"


def describe(nodes: Nodes) -> str | list[list[int]]:
    """The layout as ``summary.json`` records it: the node sizes ("4,4", the text of
    :data:`ENV`) when every node is a run of consecutive ranks in order, else each node's
    ranks."""
    start = 0
    for m in nodes:
        if m != tuple(range(start, start + len(m))):
            return [list(m) for m in nodes]
        start += len(m)
    return ",".join(str(len(m)) for m in nodes)


def from_mpi(comm: Any) -> tuple[Nodes | None, int]:
    """(layout, node count) of ``comm`` (:func:`found`, collective): the layout is None for
    one node or one rank per node (flat)."""
    nodes, _ = found(comm)
    return (None if len(nodes) in (1, comm.Get_size()) else nodes), len(nodes)
