"""Every fused update kernel reports "the new values are all finite" exactly: true up to
±max (finite), false as soon as one entry is NaN, +inf or -inf. Written for a gap mutation
testing found (docs/testing.md, "Mutation testing")."""

from __future__ import annotations

import numpy as np
import pytest


# Every fused update kernel returns "the new values are all finite". A value equal to the
# largest finite float is finite; NaN, +inf and -inf are not.
def _fused_cases(dtype):
    from decomp.kernels import fused

    t = np.dtype(dtype).type
    one, two = t(1.0), t(2.0)

    def vec(v):
        return np.array([0.5, v, -0.25], dtype)

    return {
        "descend": lambda v: fused.descend(vec(v), one, np.zeros(3, dtype)),
        "descend_mean": lambda v: fused.descend_mean(vec(v), one, np.zeros(3, dtype), two),
        "axpy": lambda v: fused.axpy(vec(v), one, np.zeros(3, dtype)),
        "momentum": lambda v: fused.momentum(vec(v), np.zeros(3, dtype), np.zeros(3, dtype),
                                             one, t(0.5), one, False),
        "momentum_nesterov": lambda v: fused.momentum(vec(v), np.zeros(3, dtype),
                                                      np.zeros(3, dtype), one, t(0.5), one,
                                                      True),
        "gossip_mix": lambda v: fused.gossip_mix(np.empty(3, dtype), vec(v),
                                                 np.zeros((1, 3), dtype), one,
                                                 np.ones(1, dtype), one, np.zeros(3, dtype)),
        "apply_dense": lambda v: fused.apply_dense(np.zeros(3, dtype), vec(v), one, one),
        "all_finite": lambda v: fused.all_finite(vec(v)),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel", list(_fused_cases(np.float64)))
def test_fused_kernels_report_finiteness_exactly(kernel, dtype):
    """True for finite results including ±max (the boundary is finite), False as soon as one
    entry is NaN, +inf or -inf."""
    run = _fused_cases(dtype)[kernel]
    big = np.finfo(dtype).max
    assert bool(run(0.0))
    assert bool(run(big)) and bool(run(-big))
    for bad in (np.nan, np.inf, -np.inf):
        assert not bool(run(bad)), f"{kernel} called {bad} finite"
