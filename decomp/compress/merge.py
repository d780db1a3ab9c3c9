"""One rank's partial sum in the tree aggregation, and its messages (SparCML).

Every message of ``aggregation = "tree"`` (:mod:`decomp.comm.tree`) is one index range
[lo, hi) of a partial sum, in the wire format of :mod:`decomp.compress.aggregate` for a vector
of length m = hi − lo (kind :data:`~decomp.compress.aggregate.KIND`)::

    sparse:  the present entries' values | their indices − lo packed at bits(m − 1) bits
             16 + c·itemsize + ceil(c·bits(m − 1)/8) bytes, sent while smaller than
    dense:   the m values                                     16 + m·itemsize bytes

so a range of the whole vector (lo = 0, hi = d) is exactly the downlink sum the master–worker
family applies (:class:`~decomp.compress.aggregate.SumDecoder`). :class:`RangeSum` keeps the
rank's sum dense in memory with a presence mask (the union of the supports summed into it; a
dense message makes its whole range present): receiving adds a range (``acc[lo:hi] +=``
the message's values, absent entries adding +0) or puts it (the total's ranges in the
all-gather). Every entry is therefore the same dense sum whatever the encoding, and decomp.sim
runs this class on its own rows, so MPI equals the reference to the last bit and in every
byte. A worker's own payload enters through :meth:`RangeSum.start` (its one-payload sum:
Top-k's indices, or dense); a poisoned payload (a worker's non-finite vector) starts a dense
NaN sum, and every sum it enters is NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from decomp.compress.aggregate import KIND, SumEncoder, index_bits
from decomp.compress.base import HEADER_BYTES, Compressor, Header, read_header, write_header
from decomp.errors import PayloadError
from decomp.kernels.bits import pack_codes, packed_bytes, unpack_codes

__all__ = ["RangeSum", "sum_message_bytes"]


def sum_message_bytes(count: float | None, m: int, dtype: Any) -> int:
    """Bytes of a tree message over a range of m entries: the sparse sum of ``count``
    present entries, or the dense one (``count`` None, or sparse not smaller than dense)."""
    isz = np.dtype(dtype).itemsize
    dense = HEADER_BYTES + m * isz
    if count is None or m == 0:
        return dense
    c = int(np.ceil(count))
    sparse = HEADER_BYTES + c * isz + (c * index_bits(m) + 7) // 8
    return dense if sparse >= dense else sparse


class RangeSum:
    """One rank's partial sum of d values of ``dtype`` (float32 / float64) for one run:
    ``acc`` (d,) and ``present`` (d,) bool, reused from step to step."""

    def __init__(self, d: int, dtype: Any) -> None:
        self.enc = SumEncoder(d, dtype)
        self.d, self.dtype = self.enc.d, self.enc.dtype
        self.code = self.enc.code
        self.acc = np.zeros(self.d, dtype=self.dtype)
        self.present = np.zeros(self.d, dtype=bool)
        self._idx = np.empty(0, dtype=np.uint32)

    # ------------------------------------------------------------------ the leaf
    def start(self, C: Compressor, payload: np.ndarray | None) -> None:
        """This rank's own payload as its sum (None: the empty sum, a rank that sends no
        payload this step)."""
        if payload is None:
            self.acc[:] = 0
            self.present[:] = False
            return
        msg = self.enc.encode(C, [payload])
        self.acc[:] = 0
        self.present[:] = False
        self.put(0, self.d, msg)

    def start_dense(self, values: np.ndarray, present: np.ndarray) -> None:
        """The sum ``values`` with the entries ``present`` (decomp.sim's rows: a sparse
        compressor's support, or everything); all present when its sparse message would not
        be smaller than the dense one (as :meth:`start` encodes a payload)."""
        self.acc[:] = values
        self.present[:] = present
        if sum_message_bytes(int(np.count_nonzero(self.present)), self.d, self.dtype) == \
                HEADER_BYTES + self.d * self.dtype.itemsize:
            self.present[:] = True

    # ------------------------------------------------------------------ messages
    def encode(self, lo: int, hi: int) -> np.ndarray:
        """A fresh message of the range [lo, hi) (module doc)."""
        m, isz = hi - lo, self.dtype.itemsize
        pres = self.present[lo:hi]
        count = int(np.count_nonzero(pres))
        total = sum_message_bytes(count, m, self.dtype)
        buf = np.empty(total, dtype=np.uint8)
        if total == HEADER_BYTES + m * isz:
            write_header(buf, Header(KIND, self.code, 0, m, m))
            buf[HEADER_BYTES:].view(self.dtype)[:] = self.acc[lo:hi]
            return buf
        bits = index_bits(m)
        write_header(buf, Header(KIND, self.code, bits, count, m))
        idx = np.flatnonzero(pres).astype(np.uint32)
        v1 = HEADER_BYTES + count * isz
        buf[HEADER_BYTES:v1].view(self.dtype)[:] = self.acc[lo:hi][idx]
        pack_codes(idx, count, bits, buf, v1)
        return buf

    def _parse(self, lo: int, hi: int,
               msg: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(values, None) of a dense message or (values, indices relative to lo)."""
        m, isz = hi - lo, self.dtype.itemsize
        h = read_header(msg, KIND, m)
        if h.vdtype != self.code:
            raise PayloadError("tree sum: a message of another value type")
        if h.flags == 0:
            if msg.size != HEADER_BYTES + m * isz or h.count != m:
                raise PayloadError("tree sum: dense message of the wrong length")
            return msg[HEADER_BYTES:].view(self.dtype), None
        if h.flags != index_bits(m):
            raise PayloadError(f"tree sum: index width {h.flags} does not fit {m} entries")
        v1 = HEADER_BYTES + h.count * isz
        if msg.size != v1 + packed_bytes(h.count, h.flags):
            raise PayloadError("tree sum: sparse message of the wrong length")
        if self._idx.size < h.count:
            self._idx = np.empty(max(h.count, 2 * self._idx.size), dtype=np.uint32)
        idx = self._idx[:h.count]
        unpack_codes(msg, v1, h.count, h.flags, idx)
        if h.count and int(idx.max()) >= m:
            raise PayloadError("tree sum: index out of range (corrupted)")
        return msg[HEADER_BYTES:v1].view(self.dtype), idx

    def add(self, lo: int, hi: int, msg: np.ndarray) -> None:
        """acc[lo:hi] += the message's sum (absent entries add +0); their presence joins."""
        vals, idx = self._parse(lo, hi, msg)
        if idx is None:
            self.acc[lo:hi] += vals
            self.present[lo:hi] = True
        elif idx.size:
            if idx.size > 1 and not bool((idx[1:] > idx[:-1]).all()):
                raise PayloadError("tree sum: indices not ascending (corrupted)")
            at = idx.astype(np.int64) + lo
            self.acc[at] += vals
            self.present[at] = True

    def put(self, lo: int, hi: int, msg: np.ndarray) -> None:
        """acc[lo:hi] = the message's sum (zero where absent), presence with it."""
        vals, idx = self._parse(lo, hi, msg)
        if idx is None:
            self.acc[lo:hi] = vals
            self.present[lo:hi] = True
            return
        self.acc[lo:hi] = 0
        self.present[lo:hi] = False
        at = idx.astype(np.int64) + lo
        self.acc[at] = vals
        self.present[at] = True

    def total(self) -> np.ndarray:
        """The whole sum as a downlink message (sparse while smaller)."""
        return self.encode(0, self.d)
