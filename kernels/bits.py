"""Bit packing (numba): sign planes and fixed-width codes, little-endian bit order.

Bit i of a packed stream is bit (i mod 8) of byte i // 8. A stream of b-bit codes puts code j in
bits [j*b, (j+1)*b) with its least significant bit first; the last byte is zero-padded. So d
codes of b bits take exactly ceil(d*b/8) bytes.
"""

from __future__ import annotations

import numpy as np

from decomp.kernels.jit import njit

_U8 = np.uint8


def packed_bytes(n: int, bits: int) -> int:
    """Bytes for n codes of ``bits`` bits: ceil(n * bits / 8)."""
    return (n * bits + 7) // 8


@njit(cache=True, nogil=True)
def pack_neg(x: np.ndarray, out: np.ndarray) -> None:
    """out bit j = (x_j < 0); x: (d,) float, out: uint8 (ceil(d/8),). -0.0 and 0 give 0."""
    d = x.size
    nfull = d // 8
    for i in range(nfull):
        o = 8 * i
        b = 0
        for t in range(8):
            b |= (x[o + t] < 0) << t
        out[i] = b
    if d > 8 * nfull:
        b = 0
        for t in range(d - 8 * nfull):
            b |= (x[8 * nfull + t] < 0) << t
        out[nfull] = b


@njit(cache=True, nogil=True)
def _stream_pack(codes, i0, n, bits, out, p) -> None:  # noqa: ANN001
    """Pack codes[i0:n] starting at byte p (bit offset 0), zero-padding the last byte."""
    acc = np.uint64(0)
    nb = 0
    for t in range(i0, n):
        acc |= np.uint64(codes[t]) << np.uint64(nb)
        nb += bits
        while nb >= 8:
            out[p] = _U8(acc & np.uint64(0xFF))
            p += 1
            acc >>= np.uint64(8)
            nb -= 8
    if nb > 0:
        out[p] = _U8(acc & np.uint64(0xFF))


@njit(cache=True, nogil=True)
def _stream_unpack(src, p, i0, n, bits, codes) -> None:  # noqa: ANN001
    """Unpack codes[i0:n] from byte p (bit offset 0)."""
    mask = np.uint64((1 << bits) - 1)
    acc = np.uint64(0)
    nb = 0
    for t in range(i0, n):
        while nb < bits:
            acc |= np.uint64(src[p]) << np.uint64(nb)
            p += 1
            nb += 8
        codes[t] = acc & mask
        acc >>= np.uint64(bits)
        nb -= bits


@njit(cache=True, nogil=True)
def pack_codes(codes: np.ndarray, n: int, bits: int, out: np.ndarray, start: int) -> None:
    """Pack ``codes[:n]`` (each < 2^bits, 1 <= bits <= 32) into ``out`` from byte ``start``.

    n must be a multiple of 8 unless this is the last call for the stream (the final partial
    byte is written zero-padded). Groups of 8 codes fill exactly ``bits`` bytes. Widths 1, 2,
    4 and 8 have dedicated (vectorisable) loops; other widths up to 8 build each group in a
    64-bit word and store 8 bytes (the next group overwrites the excess; the last groups use
    the exact byte loop, so no byte outside the call's ceil(n*bits/8) bytes is touched).
    """
    ngroups = n // 8
    if bits == 1:
        for i in range(ngroups):
            o = 8 * i
            out[start + i] = _U8(codes[o] | (codes[o + 1] << 1) | (codes[o + 2] << 2) |
                                 (codes[o + 3] << 3) | (codes[o + 4] << 4) |
                                 (codes[o + 5] << 5) | (codes[o + 6] << 6) | (codes[o + 7] << 7))
    elif bits == 2:
        for i in range(2 * ngroups):
            o = 4 * i
            out[start + i] = _U8(codes[o] | (codes[o + 1] << 2) | (codes[o + 2] << 4) |
                                 (codes[o + 3] << 6))
    elif bits == 4:
        for i in range(4 * ngroups):
            o = 2 * i
            out[start + i] = _U8(codes[o] | (codes[o + 1] << 4))
    elif bits == 8:
        for i in range(8 * ngroups):
            out[start + i] = _U8(codes[i])
    elif bits < 8:
        b = np.uint64(bits)
        # groups g with g * bits + 8 <= the end of this call's bytes may store 8 bytes
        room = min(out.size, start + (n * bits + 7) // 8) - start - 8
        fast = min(ngroups, room // bits + 1) if room >= 0 else 0
        for g in range(fast):
            o = 8 * g
            acc = np.uint64(0)
            for t in range(8):
                acc |= np.uint64(codes[o + t]) << (np.uint64(t) * b)
            p = start + g * bits
            for q in range(8):
                out[p + q] = _U8((acc >> np.uint64(8 * q)) & np.uint64(0xFF))
        _stream_pack(codes, 8 * fast, 8 * ngroups, bits, out, start + fast * bits)
    else:
        _stream_pack(codes, 0, 8 * ngroups, bits, out, start)
    if n > 8 * ngroups:
        _stream_pack(codes, 8 * ngroups, n, bits, out, start + ngroups * bits)


@njit(cache=True, nogil=True)
def unpack_codes(src: np.ndarray, start: int, n: int, bits: int, codes: np.ndarray) -> None:
    """Inverse of :func:`pack_codes`: ``codes[:n]`` from ``src`` starting at byte ``start``."""
    ngroups = n // 8
    if bits == 1:
        for i in range(ngroups):
            v = np.uint32(src[start + i])
            o = 8 * i
            for t in range(8):
                codes[o + t] = (v >> np.uint32(t)) & np.uint32(1)
    elif bits == 2:
        for i in range(2 * ngroups):
            v = np.uint32(src[start + i])
            o = 4 * i
            codes[o] = v & np.uint32(3)
            codes[o + 1] = (v >> np.uint32(2)) & np.uint32(3)
            codes[o + 2] = (v >> np.uint32(4)) & np.uint32(3)
            codes[o + 3] = v >> np.uint32(6)
    elif bits == 4:
        for i in range(4 * ngroups):
            v = np.uint32(src[start + i])
            codes[2 * i] = v & np.uint32(15)
            codes[2 * i + 1] = v >> np.uint32(4)
    elif bits == 8:
        for i in range(8 * ngroups):
            codes[i] = src[start + i]
    elif bits < 8:
        b = np.uint64(bits)
        mask = np.uint64((1 << bits) - 1)
        room = min(src.size, start + (n * bits + 7) // 8) - start - 8
        fast = min(ngroups, room // bits + 1) if room >= 0 else 0
        for g in range(fast):
            p = start + g * bits
            acc = np.uint64(0)
            for q in range(8):
                acc |= np.uint64(src[p + q]) << np.uint64(8 * q)
            o = 8 * g
            for t in range(8):
                codes[o + t] = (acc >> (np.uint64(t) * b)) & mask
        _stream_unpack(src, start + fast * bits, 8 * fast, 8 * ngroups, bits, codes)
    else:
        _stream_unpack(src, start, 0, 8 * ngroups, bits, codes)
    if n > 8 * ngroups:
        _stream_unpack(src, start + ngroups * bits, 8 * ngroups, n, bits, codes)
