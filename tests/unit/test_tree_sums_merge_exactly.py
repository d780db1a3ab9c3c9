"""The inner nodes of ``aggregation = "tree"`` (decomp.compress.merge.SumMerger) against sums
written here from the wire format alone (header, values, indices packed at bits(d − 1) bits):

- merging two sums gives, entry by entry, the sum of the two dense vectors bit for bit, for
  every pairing of sparse, dense and empty sums, float32 and float64, with overlapping index
  sets and a leaf whose indices are not ascending (a leaf made by the scatter fallback);
- the result is sparse (ascending indices) exactly while that is smaller than the dense sum,
  and its length is what :func:`sum_message_bytes` (the traffic the cost model and decomp.sim
  book) says: min(16 + c·itemsize + ⌈c·bits/8⌉, 16 + d·itemsize) for a union of c entries;
- merging many sums one after the other (the results are views into two buffers used in
  turn) gives the total of all of them;
- a corrupted sum (a dense or sparse message of the wrong length, the wrong index width, an
  index ≥ d, an index twice in one sum) is refused with a PayloadError, never summed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from decomp.compress._wire import VDTYPE_CODE
from decomp.compress.aggregate import KIND
from decomp.compress.base import HEADER_BYTES, Header, read_header, write_header
from decomp.compress.merge import SumMerger, sum_message_bytes
from decomp.errors import PayloadError
from decomp.kernels.bits import pack_codes, unpack_codes

D = 100  # bits(99) = 7: an index up to 127 can be written, so one >= d can be


def _bits(d: int) -> int:
    return max(1, (d - 1).bit_length())


def _sparse(idx: Any, vals: Any, d: int, dtype: Any) -> np.ndarray:
    """A sparse sum message: header, count values, count indices packed at bits(d − 1)."""
    idx = np.asarray(idx, dtype=np.uint32)
    vals = np.asarray(vals, dtype=dtype)
    c, isz, bits = idx.size, np.dtype(dtype).itemsize, _bits(d)
    buf = np.zeros(HEADER_BYTES + c * isz + (c * bits + 7) // 8 + 8, dtype=np.uint8)
    write_header(buf, Header(KIND, VDTYPE_CODE[np.dtype(dtype).name], bits, c, d))
    buf[HEADER_BYTES:HEADER_BYTES + c * isz].view(dtype)[:] = vals
    if c:
        pack_codes(idx, c, bits, buf, HEADER_BYTES + c * isz)
    return buf[:HEADER_BYTES + c * isz + (c * bits + 7) // 8].copy()


def _dense(v: np.ndarray) -> np.ndarray:
    buf = np.zeros(HEADER_BYTES + v.nbytes, dtype=np.uint8)
    write_header(buf, Header(KIND, VDTYPE_CODE[v.dtype.name], 0, v.size, v.size))
    buf[HEADER_BYTES:].view(v.dtype)[:] = v
    return buf


def _value(msg: np.ndarray, d: int, dtype: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(the dense vector a message carries, its indices if sparse), read independently."""
    h = read_header(msg, KIND, d)
    isz = np.dtype(dtype).itemsize
    out = np.zeros(d, dtype=dtype)
    if h.flags == 0:
        assert h.count == d and msg.size == HEADER_BYTES + d * isz
        out[:] = msg[HEADER_BYTES:].view(dtype)
        return out, None
    assert h.flags == _bits(d)
    v1 = HEADER_BYTES + h.count * isz
    idx = np.zeros(h.count + 8, dtype=np.uint32)
    unpack_codes(msg, v1, h.count, h.flags, idx)
    out[idx[:h.count]] = msg[HEADER_BYTES:v1].view(dtype)
    return out, idx[:h.count]


def _random_sum(rng: np.random.Generator, kind: str, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """(message, the dense vector it carries)."""
    v = np.zeros(D, dtype=dtype)
    if kind == "dense":
        v[:] = rng.standard_normal(D)
        return _dense(v), v
    if kind == "empty":
        return _sparse([], [], D, dtype), v
    idx = np.sort(rng.choice(40, size=12, replace=False))  # overlapping supports
    if kind == "unsorted":
        idx = rng.permutation(idx)
    vals = rng.standard_normal(idx.size).astype(dtype)
    v[idx] = vals
    return _sparse(idx, vals, D, dtype), v


KINDS = ["sparse", "unsorted", "dense", "empty"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kb", KINDS)
@pytest.mark.parametrize("ka", KINDS)
def test_merging_two_sums_is_their_dense_sum_bit_for_bit(ka: str, kb: str, dtype: str) -> None:
    rng = np.random.default_rng([KINDS.index(ka), KINDS.index(kb), len(dtype)])
    for _ in range(3):
        a, va = _random_sum(rng, ka, dtype)
        b, vb = _random_sum(rng, kb, dtype)
        merger = SumMerger(D, dtype)
        out = merger.merge(a, b).copy()
        got, idx = _value(out, D, dtype)
        want = va + vb
        np.testing.assert_array_equal(got, want)
        union = np.flatnonzero((va != 0) | (vb != 0))
        dense_in = "dense" in (ka, kb)
        assert out.size == sum_message_bytes(None if dense_in else union.size, D, dtype)
        if idx is not None:  # sparse: the union, ascending
            assert not dense_in
            np.testing.assert_array_equal(idx, union)
        else:
            assert dense_in or out.size == HEADER_BYTES + D * np.dtype(dtype).itemsize


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_sum_is_sparse_exactly_while_that_is_smaller(dtype: str) -> None:
    isz = np.dtype(dtype).itemsize
    dense_bytes = HEADER_BYTES + D * isz
    rng = np.random.default_rng(5)
    for c in range(0, D + 1):  # a union of c entries: two disjoint halves
        idx = np.sort(rng.choice(D, size=c, replace=False))
        vals = rng.standard_normal(c).astype(dtype) + 3  # never 0
        h = c // 2
        a = _sparse(idx[:h], vals[:h], D, dtype)
        # every third case with the upper half's indices descending (a scattered leaf)
        b = _sparse(idx[h:][::-1], vals[h:][::-1], D, dtype) if c % 3 == 0 else \
            _sparse(idx[h:], vals[h:], D, dtype)
        out = SumMerger(D, dtype).merge(a, b)
        sparse_bytes = HEADER_BYTES + c * isz + (c * _bits(D) + 7) // 8
        want = min(sparse_bytes, dense_bytes)
        assert out.size == want == sum_message_bytes(c, D, dtype), c
        assert sum_message_bytes(None, D, dtype) == dense_bytes
        got, idx_out = _value(out, D, dtype)
        assert (idx_out is None) == (sparse_bytes >= dense_bytes), c
        expect = np.zeros(D, dtype=dtype)
        expect[idx] = vals
        np.testing.assert_array_equal(got, expect)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_chain_of_merges_is_the_total(dtype: str) -> None:
    rng = np.random.default_rng(9)
    merger = SumMerger(D, dtype)
    kinds = ["sparse", "unsorted", "empty", "sparse", "sparse", "dense", "sparse", "unsorted"]
    acc, total = _random_sum(rng, "sparse", dtype)
    for kind in kinds:  # the results live in two buffers used in turn: never an input
        msg, v = _random_sum(rng, kind, dtype)
        acc = merger.merge(acc, msg)
        total = total + v
        np.testing.assert_array_equal(_value(acc, D, dtype)[0], total)
    leaf = merger.empty()
    assert read_header(leaf, KIND, D).count == 0 and leaf.size == HEADER_BYTES
    np.testing.assert_array_equal(_value(merger.merge(leaf, acc.copy()), D, dtype)[0], total)


def _corrupt(msg: np.ndarray, flags: int | None = None, count: int | None = None) -> np.ndarray:
    out = msg.copy()
    if flags is not None:
        out[3] = flags  # the header's flags byte: 0 = dense, else the index width
    if count is not None:
        out[4:8].view("<u4")[0] = count
    return out


def test_corrupted_sums_are_refused() -> None:
    dt = "float64"
    good = _sparse([3, 9, 40], [1.0, 2.0, 3.0], D, dt)
    dense = _dense(np.ones(D))
    cases = {
        "dense message of the wrong length": (dense[:-8], good),
        "dense count": (_corrupt(dense, count=D - 1), good),
        "dense count, second": (good, _corrupt(dense, count=D + 1)),
        "index width, wider": (_corrupt(good, _bits(D) + 1), good),
        "index width, narrower": (good, _corrupt(good, _bits(D) - 1)),
        "sparse message of the wrong length": (good[:-1], good),
        "sparse message too long": (np.concatenate([good, np.zeros(1, np.uint8)]), good),
        "index out of range": (_sparse([3, 120], [1.0, 2.0], D, dt), good),
        "index out of range, second": (good, _sparse([D], [1.0], D, dt)),
        "repeated index": (_sparse([5, 5], [1.0, 2.0], D, dt), good),
        "repeated index, second": (good, _sparse([7, 2, 7], [1.0, 2.0, 3.0], D, dt)),
    }
    for what, (a, b) in cases.items():
        with pytest.raises(PayloadError, match="tree sum"):
            SumMerger(D, dt).merge(a, b)
            pytest.fail(what)
