"""The schedule of ``aggregation = "tree"``: who sends which index range to whom, and in which
order sums are formed (one definition, run by the MPI transport, the thread transport and
decomp.sim alike: :func:`schedule` lists every rank's rounds, :func:`run_rounds` executes one
rank's, :func:`run_all` every rank's in one process).

**Flat (one node, or one rank per node)** — a sparse Rabenseifner all-reduce of the workers'
sum messages (SparCML, Renggli et al., SC'19, with MPICH's fold for a world that is not a
power of two). n ranks, p = 2^⌊log2 n⌋, rem = n − p, L = log2 p; d split into p blocks
[⌊kd/p⌋, ⌊(k+1)d/p⌋):

1. fold (rem > 0): rank 2i sends its whole sum to rank 2i + 1 (i < rem), which adds it; the
   p *virtual* ranks are v = i for rank 2i + 1 (i < rem) and v = r − rem for r ≥ 2·rem;
2. reduce-scatter by recursive halving, distance doubling: at step s = 0 .. L − 1 virtual
   rank v swaps with v ⊕ 2^s; of its current range it keeps the lower half if bit s of v is 0
   (else the upper), sends the other half and adds what it receives over the kept half;
3. all-gather by recursive doubling, s = L − 1 .. 0: v sends its range of the total to
   v ⊕ 2^s and puts the partner's range beside it;
4. unfold: rank 2i + 1 sends the total to rank 2i.

Each message is one range of a partial sum in the wire format of
:mod:`decomp.compress.aggregate` — sparse (the present entries, indices relative to the
range) while that is smaller, dense otherwise — so the reduce-scatter's messages stay near
k/2 entries while a subtree's sum is sparse and shrink with the range once it is dense. Every
entry j of the total is formed by the same grouping (floating-point addition is commutative,
so only the grouping matters):

    G(c_0 .. c_{n−1}) = B(v_0 .. v_{p−1}),  v_i = c_{2i} ⊕ c_{2i+1} (i < rem), c_{i+rem} else,
    B(a .. b) = B(a .. m) ⊕ B(m .. b),  m the midpoint of a power-of-two block,

e.g. n = 6: ((c0 ⊕ c1) ⊕ (c2 ⊕ c3)) ⊕ (c4 ⊕ c5); n = 5: ((c0 ⊕ c1) ⊕ c2) ⊕ (c3 ⊕ c4).
:func:`fixed_fold` evaluates exactly this grouping on a list (tests hold the schedule to it).

**Node-aware** (a node layout, :mod:`decomp.comm.nodes`): the ranks of each node first form
their node's sum by the flat schedule among themselves (shared memory), the nodes' first ranks
(leaders) then the total by the flat schedule among the leaders, and the total goes down each
node by a binomial tree (local rank i < 2^t sends it to i + 2^t); the grouping is G over the
nodes of G over each node's ranks (in rank order), a function of the layout — one node, or
one rank per node, is the flat G(n).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple, TypeVar

from decomp.errors import ConfigError

__all__ = ["AGGREGATIONS", "DEFAULT_AGGREGATION", "Round", "check_aggregation", "fixed_fold",
           "resolve_aggregation", "run_all", "run_rounds", "schedule", "tree_depth"]

#: how the master–worker family sums the workers' payloads: gathered at rank 0 and summed
#: in worker order, reduced by the fixed-order sparse reduce-scatter + all-gather ("tree"), or
#: "auto": the tree when the ranks span more than one node, else the gather
AGGREGATIONS = ("gather", "tree", "auto")
#: what a run with a shared master uses when it does not say (a dedicated master gathers).
#: On one node the gather is faster (shared memory; measured, docs/netmodel.md), on a network
#: the tree (the cost model, from 16 ranks on): "auto" picks by the node count.
DEFAULT_AGGREGATION = "auto"

T = TypeVar("T")


def check_aggregation(value: Any) -> str:
    """``value`` if it is one of :data:`AGGREGATIONS`, else a ConfigError naming them."""
    if value not in AGGREGATIONS:
        raise ConfigError(f"run.aggregation must be one of {', '.join(AGGREGATIONS)}, got "
                          f"{value!r}")
    return str(value)


def resolve_aggregation(master: str, aggregation: str | None, nodes: int | None = None) -> str:
    """The aggregation of a run: ``aggregation`` if given (checked; "tree" refused with a
    dedicated master, which is a rank that only aggregates), else :data:`DEFAULT_AGGREGATION`
    with a shared master and "gather" with a dedicated one. "auto" becomes "tree" when the
    run's ranks span ``nodes`` > 1 nodes, "gather" on one node (or with a dedicated master);
    with ``nodes`` None it stays "auto" (the transport decides once it knows the layout)."""
    if aggregation is None:
        aggregation = DEFAULT_AGGREGATION if master == "shared" else "gather"
    aggregation = check_aggregation(aggregation)
    if aggregation == "tree" and master != "shared":
        raise ConfigError("run.aggregation = 'tree' sums on every rank and needs no master "
                          "rank: use master = 'shared' with it (or aggregation = 'gather' "
                          "to keep a dedicated master)")
    if aggregation == "auto":
        if master != "shared":
            return "gather"
        if nodes is not None:
            return "tree" if nodes > 1 else "gather"
    return aggregation


def tree_depth(n: int) -> int:
    """Steps of the reduce-scatter: log2 of the largest power of two <= n (0 for one rank)."""
    return max(0, n.bit_length() - 1)


class Round(NamedTuple):
    """One rank's part of one round: ``sends`` (peer, lo, hi) — the range [lo, hi) of its
    current sum to each peer, encoded before anything of this round is received —, ``recvs``
    (peer, lo, hi) applied in order; ``op`` "add" (reduce: counted up) or "put" (the total's
    ranges: counted down)."""

    sends: tuple[tuple[int, int, int], ...]
    recvs: tuple[tuple[int, int, int], ...]
    op: str


IDLE_ADD = Round((), (), "add")
IDLE_PUT = Round((), (), "put")


def _flat(ranks: Sequence[int], d: int) -> list[list[Round]]:
    """The flat schedule (module doc) among ``ranks`` (global ids, in order), every row the
    same length: row i = the rounds of ranks[i]."""
    n = len(ranks)
    if n == 1:
        return [[]]
    L = tree_depth(n)
    p = 1 << L
    rem = n - p
    bound = [k * d // p for k in range(p + 1)]
    vrank = [None] * n  # virtual rank of each position (None: folded away)
    for i in range(n):
        if i < 2 * rem:
            vrank[i] = i // 2 if i % 2 else None
        else:
            vrank[i] = i - rem
    pos = {v: i for i, v in enumerate(vrank) if v is not None}
    rows: list[list[Round]] = [[] for _ in range(n)]
    if rem:
        for i in range(n):
            if i < 2 * rem and i % 2 == 0:
                rows[i].append(Round(((ranks[i + 1], 0, d),), (), "add"))
            elif i < 2 * rem:
                rows[i].append(Round((), ((ranks[i - 1], 0, d),), "add"))
            else:
                rows[i].append(IDLE_ADD)
    rng = {v: (0, p) for v in pos}  # current range of each virtual rank, in blocks
    for s in range(L):
        nxt = {}
        for i in range(n):
            v = vrank[i]
            if v is None:
                rows[i].append(IDLE_ADD)
                continue
            lo, hi = rng[v]
            mid = (lo + hi) // 2
            keep, give = ((lo, mid), (mid, hi)) if not v >> s & 1 else ((mid, hi), (lo, mid))
            peer = ranks[pos[v ^ (1 << s)]]
            rows[i].append(Round(((peer, bound[give[0]], bound[give[1]]),),
                                 ((peer, bound[keep[0]], bound[keep[1]]),), "add"))
            nxt[v] = keep
        rng = nxt
    for s in reversed(range(L)):
        nxt = {}
        for i in range(n):
            v = vrank[i]
            if v is None:
                rows[i].append(IDLE_PUT)
                continue
            w = v ^ (1 << s)
            (lo, hi), (plo, phi) = rng[v], rng[w]
            peer = ranks[pos[w]]
            rows[i].append(Round(((peer, bound[lo], bound[hi]),),
                                 ((peer, bound[plo], bound[phi]),), "put"))
            nxt[v] = (min(lo, plo), max(hi, phi))
        rng = nxt
    if rem:
        for i in range(n):
            if i < 2 * rem and i % 2:
                rows[i].append(Round(((ranks[i - 1], 0, d),), (), "put"))
            elif i < 2 * rem:
                rows[i].append(Round((), ((ranks[i + 1], 0, d),), "put"))
            else:
                rows[i].append(IDLE_PUT)
    return rows


def _pad(rows: list[list[Round]]) -> list[list[Round]]:
    """Rows padded with idle rounds to the longest (every rank takes part in every round)."""
    m = max((len(r) for r in rows), default=0)
    return [r + [IDLE_PUT] * (m - len(r)) for r in rows]


@lru_cache(maxsize=32)
def schedule(n: int, d: int, nodes: tuple[tuple[int, ...], ...] | None = None
             ) -> tuple[tuple[Round, ...], ...]:
    """Every rank's rounds (row r = rank r's, all rows the same length) for n ranks summing
    d-vectors; ``nodes``: the node layout (tuples of ranks, each ascending, the nodes ordered
    by their first rank; None or one node or one rank per node: the flat schedule)."""
    if nodes is None or len(nodes) == 1 or all(len(m) == 1 for m in nodes):
        return tuple(tuple(r) for r in _flat(range(n), d))
    rows: list[list[Round]] = [[] for _ in range(n)]
    inner = [_flat(m, d) for m in nodes]
    depth = max(len(f[0]) for f in inner)
    for m, f in zip(nodes, inner, strict=True):
        for r, row in zip(m, f, strict=True):
            rows[r] = row + [IDLE_PUT] * (depth - len(row))
    leaders = [m[0] for m in nodes]
    for r, row in zip(leaders, _flat(leaders, d), strict=True):
        rows[r] += row
    rows = _pad(rows)
    step = 1
    while step < max(len(m) for m in nodes):  # the total down each node: a binomial tree
        for m in nodes:
            for i, r in enumerate(m):
                if i < step and i + step < len(m):
                    rows[r].append(Round(((m[i + step], 0, d),), (), "put"))
                elif step <= i < 2 * step:
                    rows[r].append(Round((), ((m[i - step], 0, d),), "put"))
                else:
                    rows[r].append(IDLE_PUT)
        step *= 2
    return tuple(tuple(r) for r in rows)


def run_rounds(rounds: Sequence[Round], state: Any,
               exchange: Callable[[Round, list[Any]], list[Any]]) -> tuple[int, int]:
    """One rank's rounds on its ``state`` (:class:`decomp.compress.merge.RangeSum`):
    per round the messages of ``sends`` (``state.encode(lo, hi)``), ``exchange(round,
    messages)`` moves them and returns the messages of ``recvs`` in order, each added
    (``state.add``) or put (``state.put``) over its range. Returns (bytes sent in add
    rounds, bytes received in put rounds): the rank's ``up`` and ``down``."""
    up = down = 0
    for rd in rounds:
        if not rd.sends and not rd.recvs:
            continue
        out = [state.encode(lo, hi) for _, lo, hi in rd.sends]
        got = exchange(rd, out)
        apply = state.add if rd.op == "add" else state.put
        for (_, lo, hi), msg in zip(rd.recvs, got, strict=True):
            apply(lo, hi, msg)
        if rd.op == "add":
            up += sum(m.size for m in out)
        else:
            down += sum(m.size for m in got)
    return up, down


def run_all(states: Sequence[Any], nodes: tuple[tuple[int, ...], ...] | None = None
            ) -> list[tuple[int, int]]:
    """Every rank's rounds in one process (decomp.sim): round by round, every rank encodes
    its sends before any receive of the round is applied (as on MPI). Returns each rank's
    (up, down) bytes (:func:`run_rounds`)."""
    n = len(states)
    rows = schedule(n, states[0].d, nodes)
    counts = [[0, 0] for _ in range(n)]
    for j in range(len(rows[0]) if rows else 0):
        boxes: dict[tuple[int, int], Any] = {}
        for r in range(n):
            rd = rows[r][j]
            for peer, lo, hi in rd.sends:
                msg = states[r].encode(lo, hi)
                boxes[(r, peer)] = msg
                if rd.op == "add":
                    counts[r][0] += msg.size
        for r in range(n):
            rd = rows[r][j]
            apply = states[r].add if rd.op == "add" else states[r].put
            for peer, lo, hi in rd.recvs:
                msg = boxes[(peer, r)]
                apply(lo, hi, msg)
                if rd.op == "put":
                    counts[r][1] += msg.size
    return [(u, v) for u, v in counts]


def fixed_fold(items: list[T], add: Callable[[T, T], T],
               nodes: tuple[tuple[int, ...], ...] | None = None) -> T:
    """The grouping of the module doc evaluated on ``items`` (item r = rank r's
    contribution): ``add(lower, upper)`` at every inner node; with ``nodes``, G over the
    nodes of G over each node's items."""
    if not items:
        raise ValueError("fixed_fold needs at least one item")
    if nodes is not None and len(nodes) > 1 and not all(len(m) == 1 for m in nodes):
        return fixed_fold([fixed_fold([items[r] for r in m], add) for m in nodes], add)
    n = len(items)
    p = 1 << tree_depth(n)
    rem = n - p
    acc = [add(items[2 * i], items[2 * i + 1]) for i in range(rem)] + list(items[2 * rem:])
    step = 1
    while step < p:
        for v in range(0, p, 2 * step):
            acc[v] = add(acc[v], acc[v + step])
        step *= 2
    return acc[0]
