"""The binomial tree of ``aggregation = "tree"`` (decomp.comm.tree) is one definition: the MPI
transport walks it rank by rank (a rank merges its children's messages in the order of
``tree_children`` into its own, then sends the result to ``tree_parent``), the thread transport
and decomp.sim evaluate ``binomial_fold`` on the list of contributions. These tests check, for
every n up to 40, with a symbolic addition (nested pairs, so the grouping itself is compared):

- parent and children are inverse relations, rank 0 is the only root, children ascend; a
  rank outside 0..n − 1 is refused naming that range;
- the reduction takes ``tree_depth(n)`` = ⌈log2 n⌉ rounds: the root merges one child per
  round, and no rank more children;
- the rank-by-rank walk and ``binomial_fold`` form the same expression, ``binomial_fold``
  reports exactly one message per rank r > 0, and it is the walk's subtree sum of r;
- that expression is the grouping of the module doc: S(a, b) = S(a, a + h) ⊕ S(a + h, b),
  h the largest power of two < b − a (e.g. n = 6: ((c0 ⊕ c1) ⊕ (c2 ⊕ c3)) ⊕ (c4 ⊕ c5)).

On 2 MPI ranks (the MPI tests) every one of these is trivial; a slip in the walk for n ≥ 3
would otherwise only show in the 8-rank end-to-end test.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from decomp.comm.tree import binomial_fold, tree_children, tree_depth, tree_parent

SIZES = range(1, 41)


@contextmanager
def _cpu_limit(seconds: float = 0.2) -> Iterator[None]:
    """Stop the block after ``seconds`` of this process's CPU time (all of it takes about a
    millisecond): a walk that never ends (children found without bound) fails here instead of
    growing a list of ever larger integers until the machine runs out of memory."""
    def stop(signum: int, frame: Any) -> None:
        raise TimeoutError("the tree walk did not end within its CPU-time limit")

    old = signal.signal(signal.SIGVTALRM, stop)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, old)


def _pair(a: Any, b: Any) -> tuple[Any, Any]:
    return (a, b)


def _walk(r: int, n: int) -> Any:
    """What rank r sends up on the MPI transport: its own contribution, then each child's
    message merged in, in the order of ``tree_children`` (a nested pair per merge)."""
    acc = r
    for c in tree_children(r, n):
        acc = (acc, _walk(c, n))
    return acc


def _doc_grouping(a: int, b: int) -> Any:
    if b - a == 1:
        return a
    h = 1 << ((b - a - 1).bit_length() - 1)  # the largest power of two < b − a
    return (_doc_grouping(a, a + h), _doc_grouping(a + h, b))


def _leaves(e: Any) -> list[int]:
    return [e] if isinstance(e, int) else _leaves(e[0]) + _leaves(e[1])


@pytest.mark.parametrize("n", SIZES)
def test_parent_and_children_are_inverse_and_rank_0_is_the_only_root(n: int) -> None:
    with _cpu_limit():
        _relations(n)


def _relations(n: int) -> None:
    assert tree_parent(0, n) is None
    for r in range(n):
        kids = tree_children(r, n)
        assert kids == sorted(set(kids)), (n, r, kids)  # merge order: nearest first
        for c in kids:
            assert tree_parent(c, n) == r, (n, r, c)
        if r:
            p = tree_parent(r, n)
            assert p is not None and 0 <= p < r and r in tree_children(p, n), (n, r, p)
    for bad in (-1, n):  # the error names the valid ranks
        with pytest.raises(ValueError, match=rf"rank {bad} is not in 0\.\.{n - 1}\b"):
            tree_parent(bad, n)
        with pytest.raises(ValueError, match=rf"rank {bad} is not in 0\.\.{n - 1}\b"):
            tree_children(bad, n)


@pytest.mark.parametrize("n", SIZES)
def test_the_reduction_takes_ceil_log2_n_rounds(n: int) -> None:
    want = math.ceil(math.log2(n)) if n > 1 else 0
    assert tree_depth(n) == want
    with _cpu_limit():
        _rounds(n, want)


def _rounds(n: int, want: int) -> None:
    # one merge per round: the root merges a child in every round, no rank in more rounds
    assert len(tree_children(0, n)) == want
    assert max(len(tree_children(r, n)) for r in range(n)) == want


@pytest.mark.parametrize("n", SIZES)
def test_the_rank_by_rank_walk_and_the_fold_form_the_same_sum(n: int) -> None:
    sent: dict[int, Any] = {}

    def record(r: int, value: Any) -> None:
        assert r not in sent, f"rank {r} sends twice"
        sent[r] = value

    with _cpu_limit():
        total = binomial_fold(list(range(n)), _pair, record)
        assert total == _walk(0, n) == _doc_grouping(0, n), n
        assert sorted(sent) == list(range(1, n)), n
        for r, value in sent.items():
            assert value == _walk(r, n), (n, r)
    assert _leaves(total) == list(range(n))  # every contribution once, lower block first


def test_the_documented_example_and_an_empty_fold() -> None:
    assert binomial_fold(list(range(6)), _pair) == (((0, 1), (2, 3)), (4, 5))
    assert binomial_fold([7], _pair) == 7
    with pytest.raises(ValueError, match="at least one"):
        binomial_fold([], _pair)
