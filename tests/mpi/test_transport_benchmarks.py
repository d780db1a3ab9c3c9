"""The transports' benchmark harnesses run and report positive, finite times. Written for a
gap mutation testing found (docs/testing.md, "Mutation testing")."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.mpi(min_size=2)
def test_transport_benchmarks_report_positive_finite_times(comm) -> None:
    """``decomp bench``'s transport benchmarks (master–worker against raw mpi4py, and every
    neighbourhood exchange method) return one row per size (and method) with a positive,
    finite time in microseconds, the same on every rank."""
    from decomp.bench.transport import masterworker, neighborhood

    mw = masterworker(sizes=(1024,), rounds=1)
    assert [r[0] for r in mw] == [1024]
    nb = neighborhood(sizes=(64,), reps=2, rounds=1)
    assert {r[1] for r in nb} == {64} and len({r[0] for r in nb}) == len(nb)
    times = [t for r in mw for t in r[1:]] + [r[2] for r in nb]
    assert all(np.isfinite(t) and t > 0 for t in times), times
    assert comm.allgather([r[0] for r in nb]) == [[r[0] for r in nb]] * comm.size
