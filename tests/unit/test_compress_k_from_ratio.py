"""A sparsifier given a ``ratio`` keeps k = max(1, round(ratio · d)) entries. Written for a
gap mutation testing found (docs/testing.md, "Mutation testing")."""

from __future__ import annotations

import numpy as np
import pytest

from decomp.compress import RandK, TopK
from decomp.rng import Key


@pytest.mark.parametrize("cls", [RandK, TopK])
@pytest.mark.parametrize(("ratio", "d", "k"), [(0.25, 100, 25), (0.1, 37, 4), (0.5, 3, 2),
                                               (0.001, 50, 1), (1.0, 9, 9)])
def test_a_ratio_keeps_round_ratio_times_d_entries_at_least_one(cls, ratio, d, k) -> None:
    """``ratio`` keeps k = max(1, round(ratio * d)) entries: k_for says so, and a vector with
    no zero decodes to exactly k non-zero entries."""
    c = cls(ratio=ratio)
    assert c.k_for(d) == k
    x = np.arange(1.0, d + 1.0)
    out = c.decode(c.encode(x, Key(1, 0, 1)))
    assert np.count_nonzero(out) == k
