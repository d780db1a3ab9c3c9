"""16-bit float words (numba): float16 / bfloat16 rounding and widening on uint16 arrays, and the
fused mean of a 16-bit all-reduce (:mod:`decomp.compress.wire16`).

numpy converts to float16 in a software loop (some 35 ns a value here) and has no bfloat16, so
these kernels do the conversions with integer operations, one pass each:

- narrowing rounds to nearest even, as numpy's ``astype(np.float16)`` and
  :func:`decomp.compress._wire.to_wire` do (float64 input: rounded to float32 *to odd* first,
  which makes the second rounding the correctly rounded one, Boldo & Melquiond 2008);
- widening is exact (every 16-bit value is a float32);
- a non-finite input, or one beyond the format (|v| ≥ 65520 rounds to inf in float16), makes
  the kernel return False (the caller poisons the vector).

Codes: 2 = float16, 3 = bfloat16 (those of decomp.compress._wire).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _bits_f32(a: np.uint32) -> np.float32:
    """The float32 with bits a."""
    buf = np.empty(1, dtype=np.uint32)
    buf[0] = a
    return buf.view(np.float32)[0]


@njit(cache=True, nogil=True)
def _f32_bits_to_f16(u: np.uint32) -> tuple[np.uint16, bool]:
    """float16 bits of the float32 with bits u, rounded to nearest even; ok = finite."""
    sign = (u >> np.uint32(16)) & np.uint32(0x8000)
    a = u & np.uint32(0x7FFFFFFF)
    if a >= np.uint32(0x477FF000):  # ≥ 65520: inf in float16 (or inf / NaN already)
        return np.uint16(sign | np.uint32(0x7C00)), False
    if a < np.uint32(0x38800000):  # below 2^-14: a subnormal (or zero) float16
        # |v|·2^24 is exact in float32; rint rounds half to even
        m = np.uint32(np.rint(_bits_f32(a) * np.float32(16777216.0)))
        return np.uint16(sign | m), True
    h = ((a >> np.uint32(23)) - np.uint32(112)) << np.uint32(10) | \
        ((a & np.uint32(0x7FFFFF)) >> np.uint32(13))
    rem = a & np.uint32(0x1FFF)
    if rem > np.uint32(0x1000) or (rem == np.uint32(0x1000) and (h & np.uint32(1))):
        h += np.uint32(1)  # a carry into the exponent is the right result
    return np.uint16(sign | h), True


@njit(cache=True, nogil=True)
def _f32_bits_to_bf16(u: np.uint32) -> tuple[np.uint16, bool]:
    """bfloat16 bits (the upper half of float32, rounded to nearest even); ok = finite."""
    if (u & np.uint32(0x7F800000)) == np.uint32(0x7F800000):
        return np.uint16(0x7FC0), False
    r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return np.uint16(r), (r & np.uint32(0x7F80)) != np.uint32(0x7F80)


@njit(cache=True, nogil=True)
def _to_odd_bits(v: np.float64, tmp: np.ndarray) -> np.uint32:
    """float32 bits of v rounded to odd (truncate toward zero, set the last bit if inexact)."""
    f = np.float32(v)
    tmp[0] = f
    u = tmp.view(np.uint32)[0]
    back = np.float64(f)
    if back != v and abs(back) <= 3.4028234663852886e38:
        if abs(back) > abs(v):
            u -= np.uint32(1)
        u |= np.uint32(1)
    return u


@njit(cache=True, nogil=True)
def _narrow_bits(u: np.uint32, code: int) -> tuple[np.uint16, bool]:
    if code == 2:
        return _f32_bits_to_f16(u)
    return _f32_bits_to_bf16(u)


@njit(cache=True, nogil=True)
def narrow32(vals: np.ndarray, code: int, out: np.ndarray) -> bool:
    """out[j] ← the 16-bit word of vals[j] (float32 (d,); out uint16 (d,)); True iff every
    value is finite and within the format's range. (The bit operations are written out in
    one loop per format: the branch and the tuple of :func:`_narrow_bits` per value cost
    several times the pass.)"""
    bits = vals.view(np.uint32)
    bad = False
    if code == 3:
        for j in range(vals.size):
            u = bits[j]
            r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
            out[j] = np.uint16(r)
            bad |= (u & np.uint32(0x7F800000)) == np.uint32(0x7F800000)
            bad |= (r & np.uint32(0x7F80)) == np.uint32(0x7F80)
        return not bad
    for j in range(vals.size):
        u = bits[j]
        sign = (u >> np.uint32(16)) & np.uint32(0x8000)
        a = u & np.uint32(0x7FFFFFFF)
        if a >= np.uint32(0x477FF000):
            bad = True
            h = np.uint32(0x7C00)
        elif a < np.uint32(0x38800000):
            h = np.uint32(np.rint(abs(vals[j]) * np.float32(16777216.0)))
        else:
            h = (((a >> np.uint32(23)) - np.uint32(112)) << np.uint32(10)) | \
                ((a & np.uint32(0x7FFFFF)) >> np.uint32(13))
            rem = a & np.uint32(0x1FFF)
            if rem > np.uint32(0x1000) or (rem == np.uint32(0x1000) and (h & np.uint32(1))):
                h += np.uint32(1)
        out[j] = np.uint16(sign | h)
    return not bad


@njit(cache=True, nogil=True)
def narrow64(vals: np.ndarray, code: int, out: np.ndarray) -> bool:
    """:func:`narrow32` for float64 values (rounded to float32 to odd first)."""
    tmp = np.empty(1, dtype=np.float32)
    ok = True
    for j in range(vals.size):
        h, good = _narrow_bits(_to_odd_bits(vals[j], tmp), code)
        out[j] = h
        ok &= good
    return ok


def narrow(vals: np.ndarray, code: int, out: np.ndarray) -> bool:
    """:func:`narrow32` or :func:`narrow64` by the dtype of ``vals`` (contiguous)."""
    if vals.dtype == np.float64:
        return bool(narrow64(vals, code, out))
    return bool(narrow32(np.ascontiguousarray(vals, dtype=np.float32), code, out))


@njit(cache=True, nogil=True)
def _widen_one(h: np.uint16, code: int) -> np.uint32:
    """float32 bits of the 16-bit word h (exact)."""
    u = np.uint32(h)
    if code == 3:
        return u << np.uint32(16)
    sign = (u & np.uint32(0x8000)) << np.uint32(16)
    e = (u >> np.uint32(10)) & np.uint32(0x1F)
    m = u & np.uint32(0x3FF)
    if e == np.uint32(0):
        if m == np.uint32(0):
            return sign
        buf = np.empty(1, dtype=np.float32)  # m · 2^-24, exact in float32
        buf[0] = np.float32(m) * np.float32(5.9604644775390625e-08)
        return sign | buf.view(np.uint32)[0]
    if e == np.uint32(31):
        return sign | np.uint32(0x7F800000) | (m << np.uint32(13))
    return sign | ((e + np.uint32(112)) << np.uint32(23)) | (m << np.uint32(13))


@njit(cache=True, nogil=True)
def widen(words: np.ndarray, code: int, out: np.ndarray) -> None:
    """out (float32 bits, uint32 (d,)) ← the exact float32 of each 16-bit word."""
    for j in range(words.size):
        out[j] = _widen_one(words[j], code)


@njit(cache=True, nogil=True)
def mean_rows(rows: np.ndarray, code: int, n: np.float32, out: np.ndarray) -> bool:
    """out[j] ← r16((Σ_r float32(rows[r, j])) / n), rows (ranks, c) uint16 added in row order
    in float32 (numpy: ``((w0 + w1) + ...) / n`` then the 16-bit rounding); True iff finite."""
    tmp = np.empty(1, dtype=np.uint32)
    f = tmp.view(np.float32)
    ok = True
    for j in range(rows.shape[1]):
        tmp[0] = _widen_one(rows[0, j], code)
        acc = f[0]
        for r in range(1, rows.shape[0]):
            tmp[0] = _widen_one(rows[r, j], code)
            acc = np.float32(acc + f[0])
        f[0] = np.float32(acc / n)
        h, good = _narrow_bits(tmp[0], code)
        out[j] = h
        ok &= good
    return ok
