"""Deterministic reductions (numba) whose rounding a plain-numpy reference reproduces bit for bit.

A float sum depends on the order of the additions. These kernels fix the order: entry j goes
to lane j mod 64, each lane accumulates sequentially in float64, and the 64 lane sums are
combined pairwise, (l0 + l1), (l2 + l3), ... then the same on the 32 results, and so on. The
lanes are independent, so LLVM vectorises across them without reassociating anything and the
result does not depend on the compiler. The numpy twin is ``decomp.compress._ref.lane_sum``.
"""

from __future__ import annotations

import numpy as np

from decomp.kernels.jit import njit

LANES = 64


@njit(cache=True, nogil=True)
def max_key(xb: np.ndarray, mask: np.unsignedinteger) -> np.unsignedinteger:
    """max_j (bits_j & mask) over an unsigned view of a float array: the bit pattern of
    max_j |x_j|. It is >= the inf pattern iff x holds NaN or inf. One vectorised pass."""
    m = xb[0] & mask
    for j in range(1, xb.size):
        m = max(m, xb[j] & mask)
    return m


@njit(cache=True, nogil=True)
def _combine(acc: np.ndarray) -> float:
    n = acc.size
    while n > 1:
        n //= 2
        for i in range(n):
            acc[i] = acc[2 * i] + acc[2 * i + 1]
    return acc[0]


@njit(cache=True, nogil=True)
def lane_sum_abs(x: np.ndarray, power: int, scale: float) -> float:
    """sum_j |scale * x_j|^power (power 1 or 2) in float64 with the 64-lane order.

    x: (d,) float32/float64. Each term is formed in float64: t = |float64(x_j) * scale|, then
    t or t * t. ``scale`` (a power of two, or 1.0) keeps squares of float64 input in range.
    """
    d = x.size
    rows = d // LANES
    acc = np.zeros(LANES)
    xm = x[:rows * LANES].reshape((rows, LANES))
    r4 = rows - rows % 4
    # Four rows per sweep over the lanes: per lane still ((acc + t0) + t1) + t2) + t3, the
    # same additions in the same order, with a quarter of the accumulator loads and stores.
    if power == 1:
        for r in range(0, r4, 4):
            for lane in range(LANES):
                acc[lane] = (((acc[lane] + abs(np.float64(xm[r, lane]) * scale))
                              + abs(np.float64(xm[r + 1, lane]) * scale))
                             + abs(np.float64(xm[r + 2, lane]) * scale)) \
                    + abs(np.float64(xm[r + 3, lane]) * scale)
        for r in range(r4, rows):
            for lane in range(LANES):
                acc[lane] += abs(np.float64(xm[r, lane]) * scale)
    else:
        for r in range(0, r4, 4):
            for lane in range(LANES):
                a0 = np.float64(xm[r, lane]) * scale
                a1 = np.float64(xm[r + 1, lane]) * scale
                a2 = np.float64(xm[r + 2, lane]) * scale
                a3 = np.float64(xm[r + 3, lane]) * scale
                acc[lane] = (((acc[lane] + a0 * a0) + a1 * a1) + a2 * a2) + a3 * a3
        for r in range(r4, rows):
            for lane in range(LANES):
                a = np.float64(xm[r, lane]) * scale
                acc[lane] += a * a
    for j in range(rows * LANES, d):
        a = abs(np.float64(x[j]) * scale)
        acc[j - rows * LANES] += a if power == 1 else a * a
    return _combine(acc)
