"""Exact Top-k selection by magnitude (numba), a few memory passes instead of a sort.

The kernels work on the IEEE bit patterns of x (``x.view(uint32)`` / ``uint64``): for
non-negative floats the order of the bit patterns is the order of the values, so
``bits & ABS_MASK`` is a sortable integer key of |x_j|, and ``key >= INF_BITS`` spots NaN and
inf in the same comparison. Integer keys also make the kernel exact for subnormals and -0.0.

Algorithm for ``k < d`` (``topk_pack``):

1. Threshold from a sample. A deterministic strided sample of m keys (m ~ d/512, at least 2048,
   at most 65536) gives t, the sample's (r+1)-th largest key with r = k·m/d + 4·sqrt(k·m/d) + 2,
   so about k(1 + 4/sqrt(k·m/d)) entries of x exceed it. Small vectors (d <= 16384) skip this
   and take t = 0.
2. One fused pass over x in chunks of 1024 entries (8 rows x 128 columns): a vectorised
   column-wise max of the keys; only columns whose max reaches t are scanned (row by row, so
   indices stay ascending), and their entries with key >= t are appended to a candidate buffer
   (index and raw bits) with branchless stores. A column max >= INF_BITS means a non-finite
   entry: the kernel returns ``NONFINITE``. At k = d/100 about 10 % of the columns are hot, so
   the pass runs at memory speed.
3. If fewer than k candidates were found (the sample overestimated), r grows and step 2 runs
   again; the last resort t = 0 makes every entry a candidate, so the result is always exact.
   If the buffer overflowed, it is resized to the exact count and step 2 repeats once.
4. v = the k-th largest candidate key, by a histogram (radix) select over the candidates
   (also used for the sample's threshold).
5. Emit, in ascending index order, all candidates with key > v, then those equal to v from the
   lowest index up until k are chosen: deterministic ties, lowest index first.

``topk_select(x, k, out)`` keeps the original interface (indices only); ``topk_pack`` also
writes the selected values, so the encoder never gathers from x a second time.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from decomp.kernels.jit import njit

NONFINITE = -1  # status returned when x holds NaN or inf

_ROWS = 8
_COLS = 128
_CHUNK = _ROWS * _COLS
_SMALL = 16384  # below this, every entry is a candidate (no sampling)

ABS32 = np.uint32(0x7FFFFFFF)
INF32 = np.uint32(0x7F800000)
ABS64 = np.uint64(0x7FFFFFFFFFFFFFFF)
INF64 = np.uint64(0x7FF0000000000000)


def bit_view(x: np.ndarray) -> tuple[np.ndarray, np.unsignedinteger, np.unsignedinteger]:
    """(unsigned view of x's bits, abs mask, inf bits) for a float32/float64 array."""
    if x.dtype == np.float32:
        return x.view(np.uint32), ABS32, INF32
    if x.dtype == np.float64:
        return x.view(np.uint64), ABS64, INF64
    raise TypeError(f"Top-k kernels take float32/float64, got {x.dtype}")


@njit(cache=True, nogil=True)
def _collect(xb, t, mask, inf, cidx, cbits) -> int:  # noqa: ANN001
    """Append (j, bits) of every entry with key >= t, in ascending j; return the count or
    NONFINITE. If the buffer would overflow, the rest is only counted and the return value
    exceeds ``cidx.size`` (the caller resizes and collects again).

    Chunks of 1024 entries seen as 8 rows x 128 columns: a vertical (fully vectorised) max
    over the rows flags the hot columns, then only hot columns are scanned, row by row, so the
    candidates come out in ascending index order. Stores are branchless (a store per scanned
    entry, the cursor advances only for a candidate), which avoids branch mispredictions.
    """
    d = xb.size
    cap = cidx.size
    p = 0
    cmax = np.empty(_COLS, dtype=xb.dtype)
    hot = np.empty(_COLS, dtype=np.int64)
    nchunks = d // _CHUNK
    counting = False
    for c in range(nchunks):
        base = c * _CHUNK
        for g in range(_COLS):
            cmax[g] = xb[base + g] & mask
        for i in range(1, _ROWS):
            o = base + i * _COLS
            for g in range(_COLS):
                cmax[g] = max(cmax[g], xb[o + g] & mask)
        n = 0
        for g in range(_COLS):
            hot[n] = g
            n += cmax[g] >= t
        if n == 0:
            continue
        for q in range(n):
            if cmax[hot[q]] >= inf:
                return NONFINITE
        if not counting and p + n * _ROWS > cap:
            counting = True
        if counting:
            for i in range(_ROWS):
                o = base + i * _COLS
                for q in range(n):
                    p += (xb[o + hot[q]] & mask) >= t
        else:
            for i in range(_ROWS):
                o = base + i * _COLS
                for q in range(n):
                    j = o + hot[q]
                    v = xb[j]
                    cidx[p] = j
                    cbits[p] = v
                    p += (v & mask) >= t
    for j in range(nchunks * _CHUNK, d):
        v = xb[j]
        a = v & mask
        if a >= t:
            if a >= inf:
                return NONFINITE
            if not counting and p < cap:
                cidx[p] = j
                cbits[p] = v
            else:
                counting = True
            p += 1
    if counting:
        return max(p, cap + 1)
    return p


@njit(cache=True, nogil=True)
def _select(keys, n, want):  # noqa: ANN001
    """The want-th largest (1-based) of ``keys[:n]``, reordering keys in place.

    Histogram (radix) rounds: bucket the keys by their offset from the minimum into 2048
    buckets, keep the bucket holding the answer, repeat until at most 32 keys remain (then an
    insertion sort) or all remaining keys are equal. O(n) per round, a few rounds. (Written
    out instead of np.partition, whose numba version takes many seconds to compile.)
    """
    nb = 2048
    hist = np.zeros(nb, dtype=np.int64)
    while n > 32:
        lo = keys[0]
        hi = keys[0]
        for i in range(1, n):
            a = keys[i]
            lo = min(lo, a)
            hi = max(hi, a)
        if lo == hi:
            return lo
        span = hi - lo
        shift = 0
        while (span >> shift) >= nb:
            shift += 1
        hist[:] = 0
        for i in range(n):
            hist[(keys[i] - lo) >> shift] += 1
        b = nb - 1
        acc = 0
        while acc + hist[b] < want:
            acc += hist[b]
            b -= 1
        want -= acc
        m = 0
        for i in range(n):  # keep the bucket's keys, in place
            a = keys[i]
            if ((a - lo) >> shift) == b:
                keys[m] = a
                m += 1
        n = m
    for i in range(1, n):  # insertion sort, descending
        a = keys[i]
        j = i - 1
        while j >= 0 and keys[j] < a:
            keys[j + 1] = keys[j]
            j -= 1
        keys[j + 1] = a
    return keys[want - 1]


@njit(cache=True, nogil=True)
def _kth_largest(cbits, p, k, mask):  # noqa: ANN001
    """The k-th largest of the keys ``cbits[:p] & mask`` (1 <= k <= p)."""
    keys = np.empty(p, dtype=cbits.dtype)
    for i in range(p):
        keys[i] = cbits[i] & mask
    return _select(keys, p, k)


@njit(cache=True, nogil=True)
def _emit(cidx, cbits, p, k, v, mask, idx_out, bits_out) -> int:  # noqa: ANN001
    """Write the k winners among p candidates (ascending index, ties lowest index first)."""
    n_gt = 0
    for i in range(p):
        if (cbits[i] & mask) > v:
            n_gt += 1
    n_eq = k - n_gt
    q = 0
    for i in range(p):
        a = cbits[i] & mask
        if a > v or (a == v and n_eq > 0):
            if a == v:
                n_eq -= 1
            idx_out[q] = cidx[i]
            bits_out[q] = cbits[i]
            q += 1
    return q


@njit(cache=True, nogil=True)
def _all_rows(xb, mask, inf, idx_out, bits_out) -> int:  # noqa: ANN001
    """k = d: every index, in order (or NONFINITE)."""
    for j in range(xb.size):
        v = xb[j]
        if (v & mask) >= inf:
            return NONFINITE
        idx_out[j] = j
        bits_out[j] = v
    return xb.size


@njit(cache=True, nogil=True)
def _sample(xb, m, mask, inf):  # noqa: ANN001
    """Keys of the strided sample x[(s * d) // m], s < m; an empty array if one is non-finite."""
    d = xb.size
    samp = np.empty(m, dtype=xb.dtype)
    for s in range(m):
        a = xb[(s * d) // m] & mask
        if a >= inf:
            return samp[:0]
        samp[s] = a
    return samp


_TLS = threading.local()
_KEEP_MAX = 1 << 22  # candidate buffers up to 4M entries are kept for the next call


def _buffers(dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """This thread's candidate buffers for keys of ``dtype`` (empty at first)."""
    bufs = getattr(_TLS, "bufs", None)
    if bufs is None:
        bufs = _TLS.bufs = {}
    got = bufs.get(np.dtype(dtype).str)
    if got is None:
        return np.empty(0, dtype=np.uint32), np.empty(0, dtype=dtype)
    return got


def _keep(cidx: np.ndarray, cbits: np.ndarray) -> None:
    if cidx.size <= _KEEP_MAX:
        if getattr(_TLS, "bufs", None) is None:
            _TLS.bufs = {}
        _TLS.bufs[cbits.dtype.str] = (cidx, cbits)


def _topk_bits(xb: np.ndarray, k: int, mask: np.unsignedinteger, inf: np.unsignedinteger,
               idx_out: np.ndarray, bits_out: np.ndarray) -> int:
    """Top-k on bit patterns: writes k ascending indices (uint32) and their raw bits.

    Returns k or NONFINITE. The driver is plain Python around the compiled steps (so each
    step compiles once per key type, and the ~10 us of Python is negligible next to a pass).
    """
    d = xb.size
    if k >= d:
        return int(_all_rows(xb, mask, inf, idx_out, bits_out))
    zero = xb.dtype.type(0)
    if d <= _SMALL:
        m, r = 0, 0
        samp = np.empty(0, dtype=xb.dtype)
    else:
        m = min(65536, max(2048, d >> 9))
        samp = _sample(xb, m, mask, inf)
        if samp.size == 0:
            return NONFINITE
        rk = k * m / d
        r = int(rk + 4.0 * math.sqrt(rk) + 2.0)
    cidx, cbits = _buffers(xb.dtype)  # reused across calls (per thread): no page faults
    cap = cidx.size
    while True:
        if r >= m:
            t = zero
            expect = d
        else:
            t = _select(samp.copy(), m, r + 1)
            expect = int((r + 1) * (d / m) * 1.25) + 1024
        if cap < expect:
            cap = min(expect, d + _CHUNK)
            cidx = np.empty(cap, dtype=np.uint32)
            cbits = np.empty(cap, dtype=xb.dtype)
            _keep(cidx, cbits)
        p = int(_collect(xb, t, mask, inf, cidx, cbits))
        if p == NONFINITE:
            return NONFINITE
        if p > cap:  # the buffer overflowed: size it (with the scan's headroom), collect again
            cap = p + _CHUNK
            cidx = np.empty(cap, dtype=np.uint32)
            cbits = np.empty(cap, dtype=xb.dtype)
            _keep(cidx, cbits)
            p = int(_collect(xb, t, mask, inf, cidx, cbits))
        if p >= k:
            break
        r = max(2 * r + 16, r + 1)
    v = _kth_largest(cbits, p, k, mask)
    return int(_emit(cidx, cbits, p, k, v, mask, idx_out, bits_out))


def topk_pack(x: np.ndarray, k: int, idx_out: np.ndarray, vals_out: np.ndarray) -> int:
    """Top-k of |x|: ascending indices into ``idx_out[:k]``, the values x[idx] into
    ``vals_out[:k]`` (same dtype as x). Returns k, or NONFINITE if x holds NaN/inf.

    x: (d,) contiguous float32/float64; idx_out: integer (>= k,); 1 <= k <= d (caller checks).
    """
    xb, mask, inf = bit_view(x)
    if x.size > 1 << 32:
        raise ValueError("Top-k kernels index with uint32: d must be <= 2**32")
    if vals_out.dtype != x.dtype:
        raise TypeError("topk_pack: vals_out must have x's dtype")
    if idx_out.dtype == np.uint32:  # one compiled variant per key type
        return int(_topk_bits(xb, int(k), mask, inf, idx_out, vals_out.view(xb.dtype)))
    tmp = np.empty(min(int(k), x.size), dtype=np.uint32)
    got = int(_topk_bits(xb, int(k), mask, inf, tmp, vals_out.view(xb.dtype)))
    if got > 0:
        idx_out[:got] = tmp[:got]
    return got


def topk_select(x: np.ndarray, k: int, out: np.ndarray) -> int:
    """Write the Top-k indices of |x| into ``out[:k]`` (ascending); return k or NONFINITE.

    x: 1-D float32/float64, contiguous; out: 1-D integer array with at least k slots;
    1 <= k <= x.size is checked by the caller.
    """
    vals = np.empty(min(int(k), x.size), dtype=x.dtype)
    return topk_pack(x, k, out, vals)


@njit(cache=True, nogil=True)
def gather_pack(x: np.ndarray, idx: np.ndarray, vals_out: np.ndarray, idx_out: np.ndarray) -> None:
    """vals_out[j] = x[idx[j]]; idx_out[j] = idx[j] (narrowing the index type). Shapes (k,)."""
    for j in range(idx.size):
        i = idx[j]
        vals_out[j] = x[i]
        idx_out[j] = i


@njit(cache=True, nogil=True)
def scatter_add(vals: np.ndarray, idx: np.ndarray, out: np.ndarray, scale: float) -> int:
    """out[idx[j]] += scale * vals[j]; returns the first j with idx[j] out of range, or -1.

    scale == 1.0 adds the values exactly (no multiply), so aggregation is bit-identical with a
    dense sum. Otherwise the product is formed in float64 and rounded once into out.
    """
    d = out.size
    for j in range(idx.size):
        i = idx[j]
        if i >= d:
            return j
    if scale == 1.0:
        for j in range(idx.size):
            out[idx[j]] += vals[j]
    else:
        for j in range(idx.size):
            out[idx[j]] += scale * vals[j]
    return -1


@njit(cache=True, nogil=True)
def scatter_set(vals: np.ndarray, idx: np.ndarray, out: np.ndarray) -> int:
    """out[:] = 0; out[idx[j]] = vals[j]; returns the first bad j, or -1."""
    d = out.size
    for j in range(idx.size):
        if idx[j] >= d:
            return j
    out[:] = 0
    for j in range(idx.size):
        out[idx[j]] = vals[j]
    return -1
