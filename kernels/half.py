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

from decomp.kernels.jit import njit


@njit(cache=True, nogil=True)
def _bits_f32(a: np.uint32) -> np.float32:
    """The float32 with bits a."""
    buf = np.empty(1, dtype=np.uint32)
    buf[0] = a
    return buf.view(np.float32)[0]


@njit(cache=True, nogil=True, inline="always")
def _f32_bits(f: np.float32) -> np.uint32:
    """The bits of the float32 f."""
    buf = np.empty(1, dtype=np.float32)
    buf[0] = f
    return buf.view(np.uint32)[0]


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
    value is finite and within the format's range. One loop per format with the bit
    operations written out (float16: F. Giesen's round-half-to-even conversion, the subnormals
    rounded by a float add); :func:`_narrow_bits` per value costs several times the pass."""
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
    magic = np.uint32(((127 - 15) + (23 - 10) + 1) << 23)  # 0.5: aligns the subnormals
    fmagic = np.float32(0.5)
    block = 4096  # branch-free blocks (they vectorise): the subnormal candidate first
    sub = np.empty(block, dtype=np.float32)
    sb = sub.view(np.uint32)
    flag = np.uint32(0)
    for start in range(0, vals.size, block):
        stop = min(start + block, vals.size)
        for j in range(start, stop):  # a float16 subnormal: the float add rounds (RNE)
            sub[j - start] = abs(vals[j]) + fmagic
        for j in range(start, stop):
            u = bits[j]
            a = u & np.uint32(0x7FFFFFFF)
            hn = np.uint32((a + np.uint32(0xC8000FFF) + ((a >> np.uint32(13)) & np.uint32(1)))
                           >> np.uint32(13))  # exponent − 112, round half to even
            hs = np.uint32(sb[j - start] - magic)
            h = hs if a < np.uint32(0x38800000) else hn
            big = a >= np.uint32(0x477FF000)  # ≥ 65520: inf in float16 (or inf / NaN)
            h = np.uint32(0x7C00) if big else h
            flag |= np.uint32(big)
            out[j] = np.uint16(((u >> np.uint32(16)) & np.uint32(0x8000)) | h)
    return flag == np.uint32(0)


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
def widen(words: np.ndarray, code: int, out: np.ndarray) -> None:
    """out (float32 bits, uint32 (d,)) ← the exact float32 of each 16-bit word. float16: the
    exponent and mantissa shifted into place and scaled by 2^112 in float32 (exact for normals
    and subnormals alike), inf / NaN given float32's all-ones exponent, then the sign."""
    if code == 3:
        for j in range(words.size):
            out[j] = np.uint32(words[j]) << np.uint32(16)
        return
    f = out.view(np.float32)
    for j in range(words.size):
        h = np.uint32(words[j])
        u = (h & np.uint32(0x7FFF)) << np.uint32(13)
        if (h & np.uint32(0x7C00)) == np.uint32(0x7C00):
            u |= np.uint32(0x7F800000)
        out[j] = u
    scale = np.float32(2.0 ** 112)
    for j in range(words.size):
        f[j] = f[j] * scale
    for j in range(words.size):
        out[j] |= (np.uint32(words[j]) & np.uint32(0x8000)) << np.uint32(16)


@njit(cache=True, nogil=True)
def mean_rows(rows: np.ndarray, code: int, n: np.float32, out: np.ndarray) -> bool:
    """out[j] ← r16((Σ_r float32(rows[r, j])) / n), rows (ranks, c) uint16 (C order) added in
    row order in float32 (numpy: ``((w0 + w1) + ...) / n`` then the 16-bit rounding), in whole
    passes; True iff the result is finite and within the format's range."""
    c = rows.shape[1]
    acc = np.empty(c, dtype=np.uint32)
    tmp = np.empty(c, dtype=np.uint32)
    widen(rows[0], code, acc)
    fa, ft = acc.view(np.float32), tmp.view(np.float32)
    for r in range(1, rows.shape[0]):
        widen(rows[r], code, tmp)
        for j in range(c):
            fa[j] = fa[j] + ft[j]
    for j in range(c):
        fa[j] = fa[j] / n
    return narrow32(fa, code, out)
