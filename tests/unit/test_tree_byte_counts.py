"""The bytes :func:`decomp.comm.tree.run_all` counts (decomp.sim's ``up``/``down`` of the
tree, which the MPI transport's counts are held to) are the messages of the schedule: a rank's
``up`` is what it sends in the reduce rounds ("add"), its ``down`` what it receives in the
all-gather, unfold and node broadcast ("put"). With every entry present every message is
dense, 16 + (hi − lo)·itemsize bytes, so both sums follow from the schedule alone — flat
(powers of two and the fold) and node-aware."""

from __future__ import annotations

import numpy as np
import pytest

from decomp.comm.nodes import parse_layout
from decomp.comm.tree import run_all, schedule
from decomp.compress.base import HEADER_BYTES
from decomp.compress.merge import RangeSum


@pytest.mark.parametrize(("n", "layout"), [(2, None), (3, None), (4, None), (6, None),
                                           (5, "2,3"), (7, "1,1,5")])
def test_up_is_the_add_rounds_sends_and_down_the_put_rounds_receives(n, layout) -> None:
    d, dtype = 37, np.dtype(np.float64)
    nodes = None if layout is None else parse_layout(layout, n)
    states = [RangeSum(d, dtype) for _ in range(n)]
    for r, st in enumerate(states):
        st.start_dense(np.full(d, r + 1.0), np.ones(d, bool))
    counts = run_all(states, nodes)

    def size(ranges, op, rows):
        return sum(HEADER_BYTES + (hi - lo) * dtype.itemsize
                   for rd in rows if rd.op == op for _, lo, hi in getattr(rd, ranges))

    rows = schedule(n, d, nodes)
    want = [(size("sends", "add", rows[r]), size("recvs", "put", rows[r])) for r in range(n)]
    assert counts == want
    assert all(up > 0 and down > 0 for up, down in counts)  # every rank sends and receives
    assert all(np.array_equal(st.acc, np.full(d, n * (n + 1) / 2)) for st in states)
