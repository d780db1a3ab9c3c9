"""The master's downlink: the sum of the workers' compressed vectors, re-encoded for broadcast.

The master–worker family (EF21, EF, DCGD, EF21-SGDM) moves Σ_i C(v_i) from the master to every
rank instead of the dense model; every rank then applies ``out ← out + c · (s / n)`` itself
(:func:`apply_sum`), so all ranks hold the same x (and g) bit for bit.

Wire format (little endian), :data:`KIND`, after the 16-byte header of
:mod:`decomp.compress.base` (vdtype = the model's dtype, count = entries, d)::

    flags = 0 (dense):   d values                         16 + d·itemsize bytes
    flags = b (sparse):  count values | count indices     16 + count·itemsize
                         packed at b = bits(d − 1) bits     + ceil(count·b / 8) bytes

For sparse compressors (Top-k, unscaled or scaled Rand-k, and their per-tensor forms, whose
tensors' indices are moved by the tensor's offset into global ones) the master forms the union
of the workers' index sets with the values summed in worker order — a merge of the n ascending index
lists (:func:`~decomp.kernels.fused.merge_sum`: sequential, no pass over d; the union comes out
ascending, so every rank's scatter into g runs forwards), or a scatter into a dense
accumulator kept zero outside the union (:func:`~decomp.kernels.fused.union_add`) for lists
that are not ascending — and sends whichever encoding is smaller this step: the sparse union,
or dense once n·k approaches d. Other compressors (quantizers, signs, Identity, Scaled
wrappers) decode into the dense buffer directly. A poisoned payload (a worker's non-finite
vector, see :func:`decomp.algorithms.base.encode_or_poison`) makes the sum NaN everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from decomp.compress._wire import VDTYPE_CODE, VDTYPES
from decomp.compress.base import HEADER_BYTES, MAGIC, Compressor, Header, read_header, write_header
from decomp.compress.per_tensor import PerTensor
from decomp.compress.randk import RandK
from decomp.compress.topk import TopK
from decomp.errors import PayloadError
from decomp.kernels.bits import pack_codes, packed_bytes, unpack_codes
from decomp.kernels.fused import apply_dense, apply_sparse, merge_sum, take_union, union_add

#: wire kind of a downlink sum (not a compressor: never in the compressor registry)
KIND = 0x40


def index_bits(d: int) -> int:
    """Bits per packed index for length-d vectors: bits(d − 1), at least 1."""
    return max(1, (d - 1).bit_length())


def is_poison(payload: np.ndarray) -> bool:
    """A worker's 'my vector is non-finite' payload: empty, or not starting with the magic."""
    return payload.size == 0 or int(payload[0]) != MAGIC


def sparse_parts(C: Any, payload: np.ndarray,
                 d: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, indices) of a sparse compressor's payload, or None for a dense format.

    The values are the ones ``decode_add(payload, out)`` adds (Rand-k's are scaled already)."""
    if not isinstance(C, Compressor):  # a timing wrapper (TimedCodec): look through it
        C = C.inner
    # only the exact sparse types: a wrapper such as Scaled(RandK) is a Compressor with an
    # ``inner`` too, but its decode scales the inner values, so it takes the dense path
    if type(C) is TopK:
        return C._sections(payload, d)
    if type(C) is RandK:
        _, _, vals = C._parse(payload, d)
        return vals, C.indices(payload)
    if isinstance(C, PerTensor) and type(C.inner) in (TopK, RandK):
        # per-tensor Top-k / Rand-k: each tensor's (values, local indices), the indices moved
        # by the tensor's offset: global and ascending (tensors are in order)
        parts = [(off, sparse_parts(C.inner, sec, None)) for off, sec in C.parts(payload, d)]
        vals = np.concatenate([q[0] for _, q in parts])  # type: ignore[index]
        idx = np.concatenate([q[1].astype(np.uint32) + np.uint32(off)  # type: ignore[index]
                              for off, q in parts])
        return vals, idx
    return None


def sparse_count(C: Any, d: int) -> int | None:
    """Entries of one payload :func:`sparse_parts` reads sparsely (Top-k / Rand-k: k; their
    per-tensor forms: Σ_t k_t), or None for a compressor summed densely."""
    if not isinstance(C, Compressor):  # a timing wrapper, as in sparse_parts
        C = C.inner
    if type(C) in (TopK, RandK):
        return int(C.k_for(d))
    if isinstance(C, PerTensor) and type(C.inner) in (TopK, RandK) and C.layout is not None:
        return sum(int(C.inner.k_for(n)) for n in C.layout.sizes if n)
    return None


class SumEncoder:
    """The master's buffers for one run: the dense sum, the union marks and the payload.

    d: vector length; dtype: the model's dtype (the sum's and the wire values'). Buffers are
    made once; the union grows on demand. ``encode`` returns a view of the payload buffer,
    valid until the next call.
    """

    def __init__(self, d: int, dtype: Any) -> None:
        self.d = int(d)
        self.dtype = np.dtype(dtype)
        if self.dtype.name not in ("float32", "float64"):
            raise TypeError(f"downlink sums are float32/float64, got {self.dtype}")
        self.code = VDTYPE_CODE[self.dtype.name]
        self.bits = index_bits(self.d)
        self.dense_bytes = HEADER_BYTES + self.d * self.dtype.itemsize
        self.buf = np.zeros(self.dense_bytes, dtype=np.uint8)
        self.acc = np.zeros(self.d, dtype=self.dtype)  # zero outside the current union
        self.mark = np.zeros(self.d, dtype=np.uint8)
        self.union = np.empty(0, dtype=np.uint32)
        self.vals = np.empty(0, dtype=self.dtype)
        self.all_idx = np.empty(0, dtype=np.uint32)  # the payloads' lists, one after the other
        self.all_vals = np.empty(0, dtype=self.dtype)

    def sparse_bytes(self, count: int) -> int:
        return HEADER_BYTES + count * self.dtype.itemsize + packed_bytes(count, self.bits)

    def _dense_body(self) -> np.ndarray:
        return self.buf[HEADER_BYTES:self.dense_bytes].view(self.dtype)

    def _dense(self) -> np.ndarray:
        write_header(self.buf, Header(KIND, self.code, 0, self.d, self.d))
        return self.buf[:self.dense_bytes]

    def _scatter(self, parts: list[Any], cap: int) -> int:
        """union_add of every list into the zero-outside-the-union accumulator; the union and
        its sums into self.union / self.vals; the accumulator left zero."""
        count = 0
        for vals, idx in parts:
            count = union_add(vals, idx, self.acc, self.mark, self.union, count)
            assert count >= 0  # indices were checked
        take_union(self.acc, self.mark, self.union, count, self.vals)
        return count

    def encode(self, C: Compressor, payloads: list[np.ndarray]) -> np.ndarray:
        """The downlink payload of Σ_i decode(payloads[i]), summed in worker order."""
        d = self.d
        if any(is_poison(p) for p in payloads):
            self._dense_body()[:] = np.nan
            return self._dense()
        parts = [sparse_parts(C, p, d) for p in payloads]
        if any(q is None for q in parts):
            body = self._dense_body()
            body[:] = 0
            for p in payloads:
                C.decode_add(p, body)
            return self._dense()
        cap = sum(int(q[1].size) for q in parts)  # type: ignore[index]
        if self.union.size < cap:
            self.union = np.empty(cap, dtype=np.uint32)
            self.vals = np.empty(cap, dtype=self.dtype)
            self.all_idx = np.empty(cap, dtype=np.uint32)
            self.all_vals = np.empty(cap, dtype=self.dtype)
        starts = np.zeros(len(parts) + 1, dtype=np.int64)
        for i, (vals, idx) in enumerate(parts):  # type: ignore[misc]
            a, b = int(starts[i]), int(starts[i]) + idx.size
            if idx.size and int(idx.max()) >= d:
                raise PayloadError(f"payload {i} has an index >= d={d} (corrupted)")
            self.all_idx[a:b] = idx
            self.all_vals[a:b] = vals
            starts[i + 1] = b
        count = merge_sum(self.all_idx, self.all_vals, starts, self.union, self.vals)
        if count < 0:  # some list is not ascending: scatter into the dense accumulator
            count = self._scatter(parts, cap)
        if self.sparse_bytes(count) >= self.dense_bytes:  # dense is no larger: send it
            body = self._dense_body()
            body[:] = 0
            body[self.union[:count]] = self.vals[:count]
            return self._dense()
        total = self.sparse_bytes(count)
        write_header(self.buf, Header(KIND, self.code, self.bits, count, d))
        v1 = HEADER_BYTES + count * self.dtype.itemsize
        self.buf[HEADER_BYTES:v1].view(self.dtype)[:] = self.vals[:count]
        pack_codes(self.union, count, self.bits, self.buf, v1)
        return self.buf[:total]


class SumDecoder:
    """Every rank's side: applies a downlink payload to a vector (index scratch kept)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)  # the number of workers the sum is averaged over
        self.idx = np.empty(0, dtype=np.uint32)

    def apply(self, payload: np.ndarray, out: np.ndarray, c: float) -> bool:
        """out ← out + c · (s / n) with s the sum in ``payload``; True iff the entries
        written are finite. c and n are cast to out's dtype."""
        h = read_header(payload, KIND, out.size)
        if VDTYPES[h.vdtype] != out.dtype:
            raise PayloadError(f"downlink sum carries {VDTYPES[h.vdtype]} values, the "
                               f"vector is {out.dtype}")
        t = out.dtype.type
        isz = out.dtype.itemsize
        if h.flags == 0:
            if payload.size != HEADER_BYTES + h.d * isz or h.count != h.d:
                raise PayloadError("downlink sum: dense payload of the wrong length")
            s = payload[HEADER_BYTES:].view(out.dtype)
            return bool(apply_dense(out, s, t(c), t(self.n)))
        if h.flags != index_bits(h.d):
            raise PayloadError(f"downlink sum: index width {h.flags} does not fit d={h.d}")
        v1 = HEADER_BYTES + h.count * isz
        if payload.size != v1 + packed_bytes(h.count, h.flags):
            raise PayloadError("downlink sum: sparse payload of the wrong length")
        if self.idx.size < h.count:
            self.idx = np.empty(max(h.count, 2 * self.idx.size), dtype=np.uint32)
        unpack_codes(payload, v1, h.count, h.flags, self.idx)
        if h.count and int(self.idx[:h.count].max()) >= h.d:
            raise PayloadError("downlink sum: index out of range (corrupted)")
        vals = payload[HEADER_BYTES:v1].view(out.dtype)
        return bool(apply_sparse(out, self.idx, vals, h.count, t(c), t(self.n)))



def sum_payload_bytes(C: Compressor, d: int, senders: float, dtype: Any = np.float64) -> int:
    """Bytes of the master's compressed-downlink sum of ``senders`` payloads
    (:class:`SumEncoder`): for Top-k / Rand-k the union of the index sets — taken disjoint, an
    upper bound, ``min(senders·k, d)`` entries — sparse or dense, whichever is smaller; for
    other compressors the dense sum."""
    import math

    isz = np.dtype(dtype).itemsize
    dense = HEADER_BYTES + d * isz
    k = sparse_count(C, d)
    if k is None:
        return dense
    count = min(int(math.ceil(senders)) * k, d)
    return min(dense, HEADER_BYTES + count * isz + packed_bytes(count, index_bits(d)))
