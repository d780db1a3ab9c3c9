"""The node layout of ``aggregation = "tree"``: which ranks share a node (and its memory).

The tree's node-aware split (:mod:`decomp.comm.tree`) sums within each node first, then over
the nodes' first ranks; its grouping — and so the last bit of every sum — is a function of the
layout, which the reference (decomp.sim) takes as an input too. The layout comes from, in
order:

1. ``DECOMP_NODE_LAYOUT`` (environment): ``"4"`` — nodes of 4 consecutive ranks, the last
   one shorter if 4 does not divide n — or ``"3,2,3"`` — the node sizes, consecutive ranks,
   summing to n — or ``"flat"`` (no split). It overrides what MPI says, for tests on one
   machine and to make ``decomp sim`` reproduce a multi-node run (give it the run's layout);
2. MPI (the MPI transport only, without the variable): ``MPI_Comm_split_type(
   COMM_TYPE_SHARED)`` — the ranks that share memory are a node;
3. else (decomp.sim, the thread transport): flat, the same grouping as one node.

The node count also decides ``aggregation = "auto"`` (the default): the tree on more than one
node, the gather on one (:func:`decomp.comm.tree.resolve_aggregation`).
"""

from __future__ import annotations

import os
from typing import Any

from decomp.errors import ConfigError

__all__ = ["ENV", "Nodes", "count_env", "from_env", "from_mpi", "parse_layout"]

#: the environment variable that sets the node layout
ENV = "DECOMP_NODE_LAYOUT"

Nodes = tuple[tuple[int, ...], ...]


def parse_layout(text: str, n: int) -> Nodes | None:
    """The layout ``text`` (module doc) for n ranks: tuples of ranks, None for flat."""
    t = text.strip().lower()
    if t in ("", "flat"):
        return None
    try:
        sizes = [int(s) for s in t.split(",")]
    except ValueError:
        raise ConfigError(f"{ENV}={text!r}: give ranks per node ('4'), the node sizes "
                          "('3,2,3', consecutive ranks) or 'flat'") from None
    if any(s < 1 for s in sizes):
        raise ConfigError(f"{ENV}={text!r}: node sizes must be >= 1")
    if len(sizes) == 1:
        k = sizes[0]
        sizes = [min(k, n - a) for a in range(0, n, k)]
    elif sum(sizes) != n:
        raise ConfigError(f"{ENV}={text!r}: the node sizes add up to {sum(sizes)}, but the "
                          f"run has {n} ranks (give sizes summing to {n}, or one number: "
                          "ranks per node)")
    out, a = [], 0
    for s in sizes:
        out.append(tuple(range(a, a + s)))
        a += s
    return tuple(out)


def from_env(n: int) -> Nodes | None:
    """The layout ``DECOMP_NODE_LAYOUT`` gives for n ranks (None: unset, or flat)."""
    text = os.environ.get(ENV)
    return None if text is None else parse_layout(text, n)


def count_env(n: int) -> int:
    """Nodes n ranks span by ``DECOMP_NODE_LAYOUT`` (1 when unset or flat): what
    ``aggregation = "auto"`` decides by outside MPI (decomp.sim, the thread transport)."""
    nodes = from_env(n)
    return 1 if nodes is None else len(nodes)


def from_mpi(comm: Any) -> tuple[Nodes | None, int]:
    """(layout, node count) of ``comm``: ``DECOMP_NODE_LAYOUT`` if set, else the
    shared-memory sub-communicators of ``MPI_Comm_split_type`` (collective). The layout is
    None for one node or one rank per node (flat)."""
    from mpi4py import MPI

    n = comm.Get_size()
    if os.environ.get(ENV) is not None:
        nodes = from_env(n)
        count = 1 if nodes is None else len(nodes)
        return (None if count == n else nodes), count
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        first = local.allreduce(comm.Get_rank(), op=MPI.MIN)  # the node's id: its first rank
    finally:
        local.Free()
    ids = comm.allgather(first)
    nodes: dict[int, list[int]] = {}
    for r, f in enumerate(ids):
        nodes.setdefault(f, []).append(r)
    out = tuple(tuple(v) for _, v in sorted(nodes.items()))
    return (None if len(out) == 1 or len(out) == n else out), len(out)
