"""tests/mpi/test_tree_aggregation.py at 8 ranks (oversubscribed here), beyond the 4 ranks of
`make test-mpi`: a tree three levels deep, every master–worker method summed over it equal
to the reference bit for bit, sums that turn dense on the way, partial participation and the
node-aware split on an uneven layout (3 + 2 + 3 ranks) too."""

from __future__ import annotations


def test_tree_aggregation_at_8_ranks(at_8_ranks) -> None:
    passed, other, tail = at_8_ranks["test_tree_aggregation"]  # one launch (conftest)
    # at least the tests there are at one rank (some parametrizations grow with the world)
    assert other == 0 and passed >= 31, tail
