"""Fused in-place update kernels (numba) for the algorithms' hot paths.

Each kernel is one pass over flat arrays that numpy would do in two or three (and with a
full-size temporary): the descent step with its finiteness check, the gossip mixing sum
straight from the received rows, the master's union of sparse payloads and the application of
an aggregate to a vector. Every kernel does the arithmetic of the numpy expression named in its
docstring in the same order and precision (scalars are passed already cast to the arrays'
dtype, as numpy 2 casts a Python float next to a float32 array), so results agree bit for bit
with :mod:`decomp.sim`, which is written with those numpy expressions.

Finiteness comes for free: ``abs(v) <= max`` is False for NaN and ±inf, and an ``&``
reduction over it vectorises (no float reassociation is involved).
"""

from __future__ import annotations

import numpy as np

from decomp.kernels.jit import njit


@njit(cache=True, nogil=True)
def descend(x: np.ndarray, lr: np.floating, g: np.ndarray) -> bool:
    """x ← x − lr·g (numpy: ``x - lr * g``), in place; True iff every new x_j is finite.

    x, g: (d,) of one dtype; lr: a scalar of that dtype.
    """
    big = np.finfo(x.dtype).max
    ok = True
    for j in range(x.size):
        v = x[j] - lr * g[j]
        x[j] = v
        ok &= abs(v) <= big
    return ok


@njit(cache=True, nogil=True)
def descend_mean(x: np.ndarray, lr: np.floating, g: np.ndarray, n: np.floating) -> bool:
    """x ← x − lr·(g / n) (numpy: ``x - lr * (g / n)``), in place; True iff x is finite."""
    big = np.finfo(x.dtype).max
    ok = True
    for j in range(x.size):
        v = x[j] - lr * (g[j] / n)
        x[j] = v
        ok &= abs(v) <= big
    return ok


@njit(cache=True, nogil=True)
def axpy(x: np.ndarray, a: np.floating, s: np.ndarray) -> bool:
    """x ← x + a·s (numpy: ``x + a * s``), in place; True iff x is finite."""
    big = np.finfo(x.dtype).max
    ok = True
    for j in range(x.size):
        v = x[j] + a * s[j]
        x[j] = v
        ok &= abs(v) <= big
    return ok


@njit(cache=True, nogil=True)
def momentum(x: np.ndarray, m: np.ndarray, g: np.ndarray, n: np.floating, beta: np.floating,
             lr: np.floating, nesterov: bool) -> bool:
    """Heavy ball on the summed gradient g (overwritten with ḡ = g / n)::

        ḡ = g / n;  m ← m·β + ḡ;  x ← x − lr·m          (nesterov: x ← x − lr·(ḡ + β·m))

    in numpy's order of operations; True iff x is finite."""
    big = np.finfo(x.dtype).max
    ok = True
    for j in range(x.size):
        gj = g[j] / n
        mj = m[j] * beta + gj
        m[j] = mj
        if nesterov:
            gj = gj + beta * mj
            g[j] = gj
            v = x[j] - lr * gj
        else:
            g[j] = gj
            v = x[j] - lr * mj
        x[j] = v
        ok &= abs(v) <= big
    return ok


@njit(cache=True, nogil=True)
def gossip_mix(out: np.ndarray, x0: np.ndarray, rest: np.ndarray, w0: np.floating,
               w: np.ndarray, lr: np.floating, g: np.ndarray) -> bool:
    """out ← (((x0·w0 + rest[0]·w[0]) + rest[1]·w[1]) + …) − lr·g: Σ_j W_ij x_j summed self
    first, then the neighbours in order (numpy: ``acc = x0 * w0; acc = acc + r * w ...;
    acc - lr * g``). out may be x0 itself (each entry is read before it is written).

    x0, g, out: (d,); rest: (deg, d) rows of the neighbours; w: (deg,) their weights; all one
    dtype. One vectorised sweep per row, accumulating in ``out`` (an interleaved loop over the
    rows per entry, or blocks through an L1 buffer, did not vectorise and ran 3–15× slower).
    True iff out is finite.
    """
    big = np.finfo(out.dtype).max
    d = out.size
    for j in range(d):
        out[j] = x0[j] * w0
    for k in range(rest.shape[0]):
        wk = w[k]
        r = rest[k]
        for j in range(d):
            out[j] = out[j] + r[j] * wk
    ok = True
    for j in range(d):
        v = out[j] - lr * g[j]
        out[j] = v
        ok &= abs(v) <= big
    return ok


@njit(cache=True, nogil=True)
def merge_sum(idx: np.ndarray, vals: np.ndarray, starts: np.ndarray, union: np.ndarray,
              sums: np.ndarray) -> int:
    """The union of n ascending index lists with the values at equal indices summed in list
    order (from zero: 0 + v_first + …, as a dense sum of the lists in order gives).

    idx, vals: the lists one after the other, list i at [starts[i], starts[i + 1]); union,
    sums: room for every index. Returns the union's size, or −1 if a list is not strictly
    ascending (the caller falls back to :func:`union_add`). No pass over d, sequential access.
    """
    n = starts.size - 1
    for i in range(n):
        for t in range(starts[i] + 1, starts[i + 1]):
            if idx[t] <= idx[t - 1]:
                return -1
    heads = starts[:-1].copy()
    count = 0
    while True:
        m = np.uint64(0xFFFFFFFFFFFFFFFF)
        for i in range(n):
            if heads[i] < starts[i + 1] and np.uint64(idx[heads[i]]) < m:
                m = np.uint64(idx[heads[i]])
        if m == np.uint64(0xFFFFFFFFFFFFFFFF):
            return count
        s = sums.dtype.type(0)
        for i in range(n):
            h = heads[i]
            if h < starts[i + 1] and np.uint64(idx[h]) == m:
                s = s + vals[h]
                heads[i] = h + 1
        union[count] = m
        sums[count] = s
        count += 1


@njit(cache=True, nogil=True)
def union_add(vals: np.ndarray, idx: np.ndarray, acc: np.ndarray, mark: np.ndarray,
              union: np.ndarray, count: int) -> int:
    """acc[idx[j]] += vals[j] for every j, recording each index seen for the first time.

    mark: (d,) uint8, 1 where an index is already in ``union[:count]``; union: room for every
    index. acc and mark are zero outside the union (the caller clears them with
    :func:`take_union`). Returns the new count, or −1 − j if idx[j] is out of range.
    """
    d = acc.size
    for j in range(idx.size):
        if idx[j] >= d:
            return -1 - j
    for j in range(idx.size):
        i = idx[j]
        if mark[i] == 0:
            mark[i] = 1
            union[count] = i
            count += 1
        acc[i] += vals[j]
    return count


@njit(cache=True, nogil=True)
def take_union(acc: np.ndarray, mark: np.ndarray, union: np.ndarray, count: int,
               vals_out: np.ndarray) -> None:
    """vals_out[:count] = acc[union[:count]], then acc and mark back to zero there."""
    for t in range(count):
        i = union[t]
        vals_out[t] = acc[i]
        acc[i] = 0
        mark[i] = 0


@njit(cache=True, nogil=True)
def apply_sparse(out: np.ndarray, idx: np.ndarray, vals: np.ndarray, count: int,
                 c: np.floating, n: np.floating) -> bool:
    """out[idx[t]] ← out[idx[t]] + c·(vals[t] / n) for t < count (numpy on the dense sum s:
    ``out + c * (s / n)``, which leaves the entries where s = 0 unchanged). True iff the
    written entries are finite."""
    big = np.finfo(out.dtype).max
    ok = True
    for t in range(count):
        i = idx[t]
        v = out[i] + c * (vals[t] / n)
        out[i] = v
        ok &= abs(v) <= big
    return ok


@njit(cache=True, nogil=True)
def apply_dense(out: np.ndarray, s: np.ndarray, c: np.floating, n: np.floating) -> bool:
    """out ← out + c·(s / n), in place; True iff out is finite."""
    big = np.finfo(out.dtype).max
    ok = True
    for j in range(out.size):
        v = out[j] + c * (s[j] / n)
        out[j] = v
        ok &= abs(v) <= big
    return ok


@njit(cache=True, nogil=True)
def scale_add(v: np.ndarray, a: np.floating, b: np.floating, g: np.ndarray) -> None:
    """v ← v·a + b·g (numpy: ``v *= a; v += b * g``), in place (the momentum recursion)."""
    for j in range(v.size):
        v[j] = v[j] * a + b * g[j]


@njit(cache=True, nogil=True)
def all_finite(x: np.ndarray) -> bool:
    """True iff every x_j is finite (one vectorised pass, no temporary)."""
    big = np.finfo(x.dtype).max
    ok = True
    for j in range(x.size):
        ok &= abs(x[j]) <= big
    return ok
