"""Properties of decomp.comm over MPI that surviving mutants showed no test stated
(docs/testing.md, "Mutation testing")."""

from __future__ import annotations

import numpy as np
import pytest

from decomp.comm import MasterWorker


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("master", ["shared", "dedicated"])
def test_gather_lays_out_again_whenever_the_sizes_change(comm, master: str) -> None:
    """Variable-size gathers whose sizes grow, shrink and grow again: every round the master
    gets each worker's payload exactly (the cached receive views are reused only for the very
    same sizes, never for larger or lexicographically greater ones)."""
    tp = MasterWorker(comm, master)
    for rnd, (a, b) in enumerate([(1, 1), (4, 3), (4, 5), (2, 0), (9, 2), (9, 2)]):
        payload = None
        if tp.is_worker:
            payload = np.full(a + b * tp.worker, 10 * rnd + tp.worker, dtype=np.uint8)
        got = tp.gather(payload)
        if tp.is_master:
            assert [p.tolist() for p in got] == [[10 * rnd + w] * (a + b * w)
                                                 for w in range(tp.n_workers)]
