"""Top-k's candidate collection never loses a candidate silently: it stores every entry
above the threshold or reports an overflow, so the caller grows the buffer and collects again.
Written for a gap mutation testing found (docs/testing.md, "Mutation testing")."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("cap", [1, 4, 7, 8, 16])
def test_topk_collect_stores_every_candidate_or_reports_overflow(cap):
    """``_collect`` either stores every entry whose key is >= t (return value = their count,
    <= the buffer size) or returns more than the buffer size, so the caller grows it and
    collects again. It switches to counting as soon as a chunk's hot columns could overflow
    (8 rows per hot column), even if fewer entries are candidates; that must still read as
    an overflow."""
    from decomp.kernels.topk import ABS32, _collect

    x = np.zeros(3 * 1024 + 5, np.float32)
    x[[5, 2048 + 7, 3 * 1024 + 2]] = [3.0, -2.0, 4.0]  # candidates in chunks 0, 2 and the tail
    t = np.float32(1.0).view(np.uint32)
    cidx, cbits = np.zeros(cap, np.uint32), np.zeros(cap, np.uint32)
    p = int(_collect(x.view(np.uint32), t, ABS32, np.uint32(0x7F800000), cidx, cbits))
    if p <= cap:
        assert p == 3
        assert cidx[:3].tolist() == [5, 2048 + 7, 3 * 1024 + 2]
        assert np.array_equal(cbits[:3], x[cidx[:3]].view(np.uint32))
    else:
        assert cap < 8 + 8  # only a buffer too small for the hot columns may overflow
