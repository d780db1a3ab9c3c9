"""Pairwise merge of downlink sums: the inner nodes of the tree aggregation (SparCML).

Every message of ``aggregation = "tree"`` is a sum in the wire format of
:mod:`decomp.compress.aggregate` (kind :data:`~decomp.compress.aggregate.KIND`: sparse = the
summed values of an ascending index union with bit-packed indices, or dense). A worker turns
its compressed payload into that format (:meth:`SumMerger.leaf`: a one-payload
:class:`~decomp.compress.aggregate.SumEncoder` sum, so Top-k's indices travel packed at
bits(d − 1) bits), and every inner node of the tree merges its children's sums into its own
(:meth:`SumMerger.merge`)::

    sparse ⊕ sparse:  union of the two ascending index lists, values at a common index
                      a_j + b_j (kernels.fused.merge_sum); sent dense instead as soon as the
                      sparse encoding is not smaller than the dense one (16 + d·itemsize)
    dense ⊕ sparse:   out = a; out[idx_b] += vals_b
    dense ⊕ dense:    out = a + b

so a sum is sparse while the union of its subtree's index sets is small and dense from the
level where it fills up (SparCML, Renggli et al., SC'19: the dynamic sparse-to-dense switch).
Every entry of the result is the sum of the same two partial sums whatever the case, so the
result is the dense tree-ordered sum to the last bit (an entry a subtree did not send adds
nothing, as +0 would). A poisoned payload (a worker's non-finite vector) makes its leaf a
dense NaN vector, and every sum above it NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from decomp.compress.aggregate import KIND, SumEncoder, index_bits
from decomp.compress.base import HEADER_BYTES, Compressor, Header, read_header, write_header
from decomp.errors import PayloadError
from decomp.kernels.bits import pack_codes, unpack_codes
from decomp.kernels.fused import merge_sum

__all__ = ["SumMerger", "sum_message_bytes"]


def sum_message_bytes(count: int | None, d: int, dtype: Any) -> int:
    """Bytes of a tree message: the sparse sum of ``count`` entries, or the dense one
    (``count`` None, or the sparse encoding not smaller than the dense)."""
    isz = np.dtype(dtype).itemsize
    dense = HEADER_BYTES + d * isz
    if count is None:
        return dense
    sparse = HEADER_BYTES + count * isz + (count * index_bits(d) + 7) // 8
    return dense if sparse >= dense else sparse


class SumMerger:
    """One run's buffers for the tree: leaves, merges (two result buffers used in turn, so a
    merge never writes into its own input), index scratch. d: vector length; dtype: the
    model's (float32 / float64). Results are views valid until the next-but-one call."""

    def __init__(self, d: int, dtype: Any) -> None:
        self.enc = SumEncoder(d, dtype)
        self.d, self.dtype = self.enc.d, self.enc.dtype
        self.bits = index_bits(self.d)
        self.dense_bytes = self.enc.dense_bytes
        self._out = [np.zeros(self.dense_bytes, dtype=np.uint8) for _ in range(2)]
        self._turn = 0
        self._ia = np.empty(0, dtype=np.uint32)
        self._ib = np.empty(0, dtype=np.uint32)
        self._all_idx = np.empty(0, dtype=np.uint32)
        self._all_vals = np.empty(0, dtype=self.dtype)
        self._union = np.empty(0, dtype=np.uint32)
        self._vals = np.empty(0, dtype=self.dtype)

    # ------------------------------------------------------------------ leaves
    def empty(self) -> np.ndarray:
        """The sum of nothing (a rank that contributes no payload): sparse, 0 entries."""
        buf = self._next()
        write_header(buf, Header(KIND, self.enc.code, self.bits, 0, self.d))
        return buf[:HEADER_BYTES]

    def leaf(self, C: Compressor, payload: np.ndarray | None) -> np.ndarray:
        """This rank's own payload as a one-term sum (None: :meth:`empty`)."""
        if payload is None:
            return self.empty()
        return self.enc.encode(C, [payload])

    # ------------------------------------------------------------------ merge
    def _next(self) -> np.ndarray:
        self._turn ^= 1
        return self._out[self._turn]

    def _parse(self, p: np.ndarray, scratch: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(dense body, None) or (values, indices) of a sum payload (indices unpacked into
        the scratch array named ``scratch``)."""
        h = read_header(p, KIND, self.d)
        isz = self.dtype.itemsize
        if h.flags == 0:
            if p.size != self.dense_bytes or h.count != self.d:
                raise PayloadError("tree sum: dense message of the wrong length")
            return p[HEADER_BYTES:].view(self.dtype), None
        if h.flags != self.bits:
            raise PayloadError(f"tree sum: index width {h.flags} does not fit d={self.d}")
        v1 = HEADER_BYTES + h.count * isz
        if p.size != sum_message_bytes(h.count, self.d, self.dtype):
            raise PayloadError("tree sum: sparse message of the wrong length")
        idx = getattr(self, scratch)
        if idx.size < h.count:
            idx = np.empty(max(h.count, 2 * idx.size), dtype=np.uint32)
            setattr(self, scratch, idx)
        unpack_codes(p, v1, h.count, self.bits, idx)
        if h.count and int(idx[:h.count].max()) >= self.d:
            raise PayloadError("tree sum: index out of range (corrupted)")
        return p[HEADER_BYTES:v1].view(self.dtype), idx[:h.count]

    def _dense_out(self, a: np.ndarray) -> np.ndarray:
        """A fresh dense message whose body is a copy of ``a`` (d,)."""
        buf = self._next()
        write_header(buf, Header(KIND, self.enc.code, 0, self.d, self.d))
        body = buf[HEADER_BYTES:self.dense_bytes].view(self.dtype)
        body[:] = a
        return buf[:self.dense_bytes]

    def merge(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The sum message of ``a`` ⊕ ``b`` (``a`` the lower block's sum, see the module
        doc): sparse while smaller than dense, else dense."""
        va, ia = self._parse(a, "_ia")
        vb, ib = self._parse(b, "_ib")
        if ia is None or ib is None:  # at least one dense: the result is dense
            dense, (vals, idx) = (va, (vb, ib)) if ia is None else (vb, (va, ia))
            out = self._dense_out(dense)
            body = out[HEADER_BYTES:].view(self.dtype)
            if idx is None:
                body += vals
            elif idx.size:
                body[idx] += vals  # indices are distinct within one sum
            return out
        ca, cb = ia.size, ib.size
        cap = ca + cb
        if self._union.size < cap:
            size = max(cap, 2 * self._union.size)
            self._all_idx = np.empty(size, dtype=np.uint32)
            self._all_vals = np.empty(size, dtype=self.dtype)
            self._union = np.empty(size, dtype=np.uint32)
            self._vals = np.empty(size, dtype=self.dtype)
        for k, (v, i) in enumerate(((va, ia), (vb, ib))):
            lo = 0 if k == 0 else ca
            order = None if i.size < 2 or bool((i[1:] > i[:-1]).all()) else np.argsort(i)
            self._all_idx[lo:lo + i.size] = i if order is None else i[order]
            self._all_vals[lo:lo + i.size] = v if order is None else v[order]
        starts = np.array([0, ca, cap], dtype=np.int64)
        count = merge_sum(self._all_idx, self._all_vals, starts, self._union, self._vals)
        if count < 0:
            raise PayloadError("tree sum: repeated index in a sum (corrupted)")
        total = sum_message_bytes(count, self.d, self.dtype)
        buf = self._next()
        if total == self.dense_bytes:  # the union fills up: send the dense sum from here
            write_header(buf, Header(KIND, self.enc.code, 0, self.d, self.d))
            body = buf[HEADER_BYTES:self.dense_bytes].view(self.dtype)
            body[:] = 0
            body[self._union[:count]] = self._vals[:count]
            return buf[:self.dense_bytes]
        write_header(buf, Header(KIND, self.enc.code, self.bits, count, self.d))
        v1 = HEADER_BYTES + count * self.dtype.itemsize
        buf[HEADER_BYTES:v1].view(self.dtype)[:] = self._vals[:count]
        pack_codes(self._union, count, self.bits, buf, v1)
        return buf[:total]
