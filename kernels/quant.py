"""Quantizers (numba): QSGD, natural compression, sign. Encode writes the payload body,
decode adds the dense C(x) into ``out``. Every random draw is ``splitmix64(seed, j)`` for entry j
(:mod:`decomp.kernels.rng`), so a numpy reference replays it exactly.

Work is done in chunks of ``_CH`` entries: a vectorisable loop computes the codes of a chunk
into a small buffer that stays in L1, then a packing loop writes them out.
"""

from __future__ import annotations

import numpy as np

from decomp.kernels.bits import pack_codes, unpack_codes
from decomp.kernels.jit import njit
from decomp.kernels.rng import fill_u32

_CH = 32768  # entries per chunk (multiple of 8, so chunks start on a byte boundary)
_S20 = np.uint64(20)
_S52 = np.uint64(52)
_S63 = np.uint64(63)
_M23 = np.uint32(0x7FFFFF)
_M52 = np.uint64(0xFFFFFFFFFFFFF)
_TWO126 = 2.0 ** 126
_TWO_M32 = 2.0 ** -32


# --------------------------------------------------------------------------------------------
# QSGD
# --------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def qsgd_encode(x: np.ndarray, f: float, s: int, lbits: int, seed: np.uint64,
                body: np.ndarray) -> None:
    """Codes of QSGD with s levels, packed (lbits + 1 bits each) into ``body`` (uint8).

    x: (d,) float32/float64; f = s / ||x|| (the float32 wire norm; 0 when the norm is 0).
    level = min(floor(|x_j| * f + u_j * 2^-32), s) in float64, with u_j the 32-bit draw of
    entry j (:func:`fill_u32`): the stochastic rounding of r_j = |x_j| * f (it rounds up with
    probability r_j - floor(r_j), to within 2^-32); code = level | (neg << lbits) with
    neg = [x_j < 0 and level > 0].
    """
    d = x.size
    bits = lbits + 1
    codes = np.empty(_CH, dtype=np.uint32)
    hbuf = np.empty(_CH // 2, dtype=np.uint64)
    s32 = np.uint32(s)
    lb = np.uint32(lbits)
    for base in range(0, d, _CH):
        n = min(_CH, d - base)
        u32 = fill_u32(seed, base, n, hbuf)
        xs = x[base:base + n]
        for i in range(n):
            xv = np.float64(xs[i])
            lev = np.uint32(abs(xv) * f + np.float64(u32[i]) * _TWO_M32)  # floor (>= 0)
            lev = min(lev, s32)
            neg = np.uint32(xv < 0.0) & np.uint32(lev > 0)
            codes[i] = lev | (neg << lb)
        pack_codes(codes, n, bits, body, (base * bits) // 8)


@njit(cache=True, nogil=True)
def qsgd_decode_add(body: np.ndarray, d: int, s: int, lbits: int, norm: float,
                    out: np.ndarray, scale: float, assign: bool = False) -> int:
    """out_j += scale * (±norm * level_j / s). Returns -1, or the first j whose level > s.

    The magnitude is (norm * level) / s in float64, rounded once to out's dtype. For codes of
    at most 12 bits a table indexed by the whole code (sign included) holds the signed values;
    wider codes compute the value per entry (same formula). scale == 1.0 adds the value
    exactly, with no multiply. ``assign=True`` writes out_j = value + 0.0 instead (what adding
    to a zeroed out gives, -0.0 included, without the zeroing pass).
    """
    bits = lbits + 1
    lmask = np.uint32((1 << lbits) - 1)
    lb = np.uint32(lbits)
    codes = np.empty(_CH, dtype=np.uint32)
    use_tab = bits <= 12
    ntab = 1 << bits if use_tab else 1
    tab = np.zeros(ntab, dtype=out.dtype)
    if use_tab:
        for lv in range(min(s + 1, 1 << lbits)):
            tab[lv] = (norm * lv) / s
            tab[lv | (1 << lbits)] = -tab[lv]
    one = np.zeros(1, dtype=out.dtype)
    zero = one[0]
    s32 = np.uint32(s)
    for base in range(0, d, _CH):
        n = min(_CH, d - base)
        unpack_codes(body, (base * bits) // 8, n, bits, codes)
        bad = np.uint32(0)
        if s32 != lmask:  # levels above s are representable: check for corruption
            for i in range(n):
                bad |= np.uint32((codes[i] & lmask) > s32)
        if bad:
            for i in range(n):
                if (codes[i] & lmask) > s32:
                    return base + i
        os = out[base:base + n]
        if use_tab:
            if assign:
                for i in range(n):
                    os[i] = tab[codes[i]] + zero
            elif scale == 1.0:
                for i in range(n):
                    os[i] += tab[codes[i]]
            else:
                for i in range(n):
                    os[i] += scale * tab[codes[i]]
        else:
            for i in range(n):
                c = codes[i]
                one[0] = (norm * (c & lmask)) / s  # rounded to out's dtype on store
                v = -one[0] if (c >> lb) else one[0]
                if assign:
                    os[i] = v + zero
                elif scale == 1.0:
                    os[i] += v
                else:
                    os[i] += scale * v
    return -1


# --------------------------------------------------------------------------------------------
# Natural compression
# --------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def natural_encode_f32(xb: np.ndarray, seed: np.uint64, ecodes: np.ndarray,
                       signs: np.ndarray) -> bool:
    """Natural compression of float32 bits ``xb`` (uint32 view, (d,)).

    Exponent code c_j (uint8, into ``ecodes`` (d,)) and sign bit (into ``signs``,
    ceil(d/8) bytes). With E the biased exponent field, m the 23-bit mantissa and u_j the
    32-bit draw of entry j: c = min(E + [u_j >> 9 < m], 254); c = 0 means 0, c in 1..254 means
    2^(c - 127). Subnormals (E = 0) round to 0 or 2^-126 with probability m / 2^23, i.e.
    unbiasedly. Returns False if an entry is NaN/inf (E = 255).
    """
    d = xb.size
    negs = np.empty(_CH, dtype=np.uint8)
    hbuf = np.empty(_CH // 2, dtype=np.uint64)
    for base in range(0, d, _CH):
        n = min(_CH, d - base)
        u32 = fill_u32(seed, base, n, hbuf)
        xs = xb[base:base + n]
        es = ecodes[base:base + n]
        bad = np.uint32(0)
        for i in range(n):
            b = xs[i]
            e = (b >> np.uint32(23)) & np.uint32(0xFF)
            bad |= np.uint32(e == 255)
            up = np.uint32((u32[i] >> np.uint32(9)) < (b & _M23))
            c = min(e + up, np.uint32(254))
            es[i] = np.uint8(c)
            negs[i] = np.uint8((b >> np.uint32(31)) & np.uint32(c != 0))
        if bad:
            return False
        _pack_bits(negs, n, signs, base // 8)
    return True


@njit(cache=True, nogil=True)
def natural_encode_f64(x: np.ndarray, seed: np.uint64, ecodes: np.ndarray,
                       signs: np.ndarray) -> bool:
    """Natural compression of float64 x onto the same 2^(c - 127) grid as float32.

    Exponent e = E - 1023, 52-bit mantissa m, 32-bit draw u_j: e >= 128 saturates to c = 254
    (2^127); -126 <= e <= 127 gives c = min(e + 127 + [u_j * 2^20 < m], 254); e < -126 gives
    c = [u_j * 2^-32 < |x_j| * 2^126] (0 or 2^-126). Returns False on NaN/inf.
    """
    d = x.size
    xb = x.view(np.uint64)
    negs = np.empty(_CH, dtype=np.uint8)
    hbuf = np.empty(_CH // 2, dtype=np.uint64)
    for base in range(0, d, _CH):
        n = min(_CH, d - base)
        u32 = fill_u32(seed, base, n, hbuf)
        bad = np.uint32(0)
        for i in range(n):
            j = base + i
            b = xb[j]
            e = np.int64((b >> _S52) & np.uint64(0x7FF))
            bad |= np.uint32(e == 0x7FF)
            u = u32[i]
            if e >= 1151:
                c = 254
            elif e >= 897:
                up = np.int64((np.uint64(u) << _S20) < (b & _M52))
                c = min(e - 896 + up, 254)
            else:
                c = np.int64(np.float64(u) * _TWO_M32 < abs(x[j]) * _TWO126)
            ecodes[j] = np.uint8(c)
            negs[i] = np.uint8((b >> _S63) & np.uint64(c != 0))
        if bad:
            return False
        _pack_bits(negs, n, signs, base // 8)
    return True


@njit(cache=True, nogil=True)
def natural_decode_add(ecodes: np.ndarray, signs: np.ndarray, out: np.ndarray,
                       scale: float, assign: bool = False) -> int:
    """out_j += scale * (±2^(c_j - 127), or +0 for c_j = 0). Returns -1 or the first j with
    c_j = 255 (not a valid code: the payload is corrupted).

    The value is assembled from bits (sign << 31 | c << 23 for float32 out, the float64
    equivalent otherwise) in a chunk buffer, then added: both loops vectorise. ``assign=True``
    writes out_j = value + 0.0 (as adding to a zeroed out would) without a zeroing pass.
    """
    d = out.size
    f32 = out.itemsize == 4
    vb64 = np.empty(_CH, dtype=np.uint64)
    vb32 = np.empty(_CH, dtype=np.uint32)
    zero = np.zeros(1, dtype=out.dtype)[0]
    for base in range(0, d, _CH):
        n = min(_CH, d - base)
        es = ecodes[base:base + n]
        bad = np.uint32(0)
        for i in range(n):
            bad |= np.uint32(es[i] == 255)
        if bad:
            for i in range(n):
                if es[i] == 255:
                    return base + i
        sg = signs[base // 8:]
        os = out[base:base + n]
        if f32:
            for i in range(n):
                neg = np.uint32((sg[i >> 3] >> (i & 7)) & 1)
                c = np.uint32(es[i])
                vb32[i] = (neg << np.uint32(31)) | (c << np.uint32(23))
            vals32 = vb32[:n].view(np.float32)
            if assign:
                for i in range(n):
                    os[i] = vals32[i] + zero
            elif scale == 1.0:
                for i in range(n):
                    os[i] += vals32[i]
            else:
                for i in range(n):
                    os[i] += scale * vals32[i]
        else:
            for i in range(n):
                neg = np.uint64((sg[i >> 3] >> (i & 7)) & 1)
                c = np.uint64(es[i])
                e = (c + np.uint64(896)) << _S52
                vb64[i] = (neg << _S63) | (e if c != 0 else np.uint64(0))
            vals64 = vb64[:n].view(np.float64)
            if assign:
                for i in range(n):
                    os[i] = vals64[i] + zero
            elif scale == 1.0:
                for i in range(n):
                    os[i] += vals64[i]
            else:
                for i in range(n):
                    os[i] += scale * vals64[i]
    return -1


# --------------------------------------------------------------------------------------------
# Sign
# --------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _pack_bits(flags: np.ndarray, n: int, out: np.ndarray, start: int) -> None:
    """Pack ``flags[:n]`` (0/1 bytes) LSB-first into ``out`` from byte ``start``."""
    nfull = n // 8
    for i in range(nfull):
        o = 8 * i
        b = np.uint8(0)
        for t in range(8):
            b |= flags[o + t] << np.uint8(t)
        out[start + i] = b
    if n > 8 * nfull:
        b = np.uint8(0)
        for t in range(n - 8 * nfull):
            b |= flags[8 * nfull + t] << np.uint8(t)
        out[start + nfull] = b


@njit(cache=True, nogil=True)
def sign_encode(x: np.ndarray, signs: np.ndarray) -> None:
    """signs bit j = [x_j < 0] (zeros and -0.0 count as positive); signs: ceil(d/8) bytes."""
    d = x.size
    negs = np.empty(_CH, dtype=np.uint8)
    for base in range(0, d, _CH):
        n = min(_CH, d - base)
        for i in range(n):
            negs[i] = np.uint8(x[base + i] < 0)
        _pack_bits(negs, n, signs, base // 8)


@njit(cache=True, nogil=True)
def sign_decode_add(signs: np.ndarray, mag: np.floating, out: np.ndarray, scale: float,
                    assign: bool = False) -> None:
    """out_j += scale * (bit_j ? -mag : +mag); mag: a scalar of out's dtype. ``assign=True``
    writes out_j = value + 0.0 (as adding to a zeroed out would), without a zeroing pass."""
    d = out.size
    m = mag
    nfull = d // 8
    if assign:
        zero = m - m
        for i in range(nfull):
            b = signs[i]
            for t in range(8):
                out[8 * i + t] = (-m if (b >> t) & 1 else m) + zero
        for j in range(8 * nfull, d):
            out[j] = (-m if (signs[j >> 3] >> (j & 7)) & 1 else m) + zero
    elif scale == 1.0:
        for i in range(nfull):
            b = signs[i]
            for t in range(8):
                out[8 * i + t] += -m if (b >> t) & 1 else m
        for j in range(8 * nfull, d):
            out[j] += -m if (signs[j >> 3] >> (j & 7)) & 1 else m
    else:
        for i in range(nfull):
            b = signs[i]
            for t in range(8):
                out[8 * i + t] += scale * (-m if (b >> t) & 1 else m)
        for j in range(8 * nfull, d):
            out[j] += scale * (-m if (signs[j >> 3] >> (j & 7)) & 1 else m)
