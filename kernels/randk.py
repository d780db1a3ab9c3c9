"""Rand-k (numba): k distinct indices drawn from a seed, and the value gather.

Sampling rule (replayed by the receiver and by the numpy reference): let m = min(k, d - k).
Draw i = 0, 1, 2, ...: candidate c_i = floor(splitmix64(seed, i) * d / 2^64); keep c_i if it
was not kept before, until m distinct indices are kept (rejection of repeats, recorded in a
d-bit bitmap). If k <= d - k the kept set is the selection, otherwise its complement is (so at
most d/2 distinct draws are ever needed). The selection is emitted in ascending order by a scan
of the bitmap words, O(d/64 + k).
"""

from __future__ import annotations

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from decomp.kernels.jit import njit
from decomp.kernels.rng import mulhi_index, splitmix64

_S6 = np.uint64(6)
_M6 = np.uint64(63)
_ONE = np.uint64(1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True, nogil=True)
def randk_indices(seed: np.uint64, d: int, k: int, out: np.ndarray) -> int:
    """Write the k selected indices of [0, d) into ``out[:k]`` (ascending); return the number
    of draws used. d < 2^32, 1 <= k <= d."""
    nw = (d + 63) // 64
    bm = np.zeros(nw, dtype=np.uint64)
    m = min(k, d - k)
    dd = np.uint64(d)
    got = 0
    i = 0
    while got < m:
        c = mulhi_index(splitmix64(seed, np.uint64(i)), dd)
        i += 1
        w = c >> _S6
        bit = _ONE << (c & _M6)
        old = bm[w]
        if not (old & bit):
            bm[w] = old | bit
            got += 1
    comp = m < k  # the drawn set is the complement of the selection
    q = 0
    for wi in range(nw):
        v = bm[wi]
        if comp:
            v = ~v
            if wi == nw - 1 and d % 64:
                v &= (_ONE << np.uint64(d % 64)) - _ONE
        base = wi * 64
        while v:
            out[q] = base + trailing_zeros(v)
            q += 1
            v &= v - _ONE
    return i


@njit(cache=True, nogil=True)
def gather_scaled(x: np.ndarray, idx: np.ndarray, fac: np.floating, scaled: bool,
                  vals: np.ndarray) -> bool:
    """vals[q] = x[idx[q]] * fac (fac a scalar of x's dtype; no multiply if not scaled).

    Returns False if a selected value is or becomes non-finite (overflow of the scaling).
    """
    f = fac
    ok = True
    for q in range(idx.size):
        v = x[idx[q]]
        if scaled:
            v = v * f
        vals[q] = v
        ok &= (v - v) == 0
    return ok
