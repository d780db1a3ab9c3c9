"""The binomial tree of ``aggregation = "tree"``: who sends to whom, and in which order sums
are formed (one definition, used by the MPI transport, the thread transport and decomp.sim).

Ranks 0..n−1; rank r > 0 sends to its parent r − lowbit(r); rank r receives, in this order,
from its children r + 1, r + 2, r + 4, … (every r + 2^j with 2^j < lowbit(r) — any 2^j for
r = 0 — and r + 2^j < n). After merging child r + 2^j, rank r holds the sum over the block
[r, min(r + 2^(j+1), n)), so the total is formed by the fixed grouping

    S(a, b) = S(a, a + h) ⊕ S(a + h, b),   h = the largest power of two < b − a,
    S(a, a + 1) = c_a,

where ⊕ adds the lower block first (floating-point addition is commutative, so only the
grouping matters). E.g. n = 6: ((c0 ⊕ c1) ⊕ (c2 ⊕ c3)) ⊕ (c4 ⊕ c5). :func:`binomial_fold`
evaluates exactly this grouping on a list (what decomp.sim and the thread transport do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from decomp.errors import ConfigError

__all__ = ["AGGREGATIONS", "DEFAULT_AGGREGATION", "binomial_fold", "check_aggregation",
           "resolve_aggregation", "tree_children", "tree_depth", "tree_parent"]

#: how the master–worker family sums the workers' payloads: gathered at rank 0 and summed
#: in worker order, or reduced over the binomial tree (sparse union-merge at every node)
AGGREGATIONS = ("gather", "tree")
#: what a run with a shared master uses when it does not say (a dedicated master gathers)
DEFAULT_AGGREGATION = "gather"

T = TypeVar("T")


def check_aggregation(value: Any) -> str:
    """``value`` if it is one of :data:`AGGREGATIONS`, else a ConfigError naming them."""
    if value not in AGGREGATIONS:
        raise ConfigError(f"run.aggregation must be one of {', '.join(AGGREGATIONS)}, got "
                          f"{value!r}")
    return str(value)


def resolve_aggregation(master: str, aggregation: str | None) -> str:
    """The aggregation of a run: ``aggregation`` if given (checked; "tree" refused with a
    dedicated master, which is a rank that only aggregates), else :data:`DEFAULT_AGGREGATION`
    with a shared master and "gather" with a dedicated one."""
    if aggregation is None:
        return DEFAULT_AGGREGATION if master == "shared" else "gather"
    aggregation = check_aggregation(aggregation)
    if aggregation == "tree" and master != "shared":
        raise ConfigError("run.aggregation = 'tree' sums on every rank and needs no master "
                          "rank: use master = 'shared' with it (or aggregation = 'gather' "
                          "to keep a dedicated master)")
    return aggregation


def tree_parent(rank: int, n: int) -> int | None:
    """The rank ``rank`` sends its subtree's sum to (None for the root, rank 0)."""
    if not 0 <= rank < n:
        raise ValueError(f"rank {rank} is not in 0..{n - 1}")
    return None if rank == 0 else rank - (rank & -rank)


def tree_children(rank: int, n: int) -> list[int]:
    """The ranks ``rank`` receives from, in merge order (nearest first)."""
    if not 0 <= rank < n:
        raise ValueError(f"rank {rank} is not in 0..{n - 1}")
    out, step = [], 1
    while rank + step < n and (rank == 0 or step < (rank & -rank)):
        out.append(rank + step)
        step *= 2
    return out


def tree_depth(n: int) -> int:
    """Rounds of the reduction: ceil(log2 n) (0 for one rank)."""
    return max(0, (n - 1).bit_length())


def binomial_fold(items: list[T], add: Callable[[T, T], T],
                  sent: Callable[[int, T], None] | None = None) -> T:
    """The tree's sum of ``items`` (item r = rank r's contribution) with the grouping of the
    module doc: ``add(lower, upper)`` at every inner node. ``sent(r, value)`` (optional) is
    called with what rank r > 0 sends to its parent (its subtree's sum)."""
    if not items:
        raise ValueError("binomial_fold needs at least one item")
    acc = list(items)
    n, step = len(acc), 1
    while step < n:
        for r in range(0, n - step, 2 * step):
            if sent is not None:
                sent(r + step, acc[r + step])
            acc[r] = add(acc[r], acc[r + step])
        step *= 2
    return acc[0]
