"""Top-k: keep the k entries of largest magnitude (contractive, alpha = k/d).

Wire format: header | two sections of k entries each: values (wire dtype, default the
input's) and indices (uint16 when d <= 65536, else uint32), the section with the larger item
size first, so both are naturally aligned with no padding. Indices are ascending; the header's
``flags`` holds the index width in bytes. payload_bytes = 16 + k * (value bytes + index bytes).

Encoding uses :func:`decomp.kernels.topk_pack` (sample threshold, one fused memory pass,
histogram select, exact lowest-index tie-break) and writes values and indices straight into
the payload when the wire dtype is the input's.
"""

from __future__ import annotations

import numpy as np

from decomp.compress._wire import (
    check_value_dtype,
    from_wire,
    itemsize,
    round_like_wire,
    to_wire,
    wire_code,
)
from decomp.compress.base import (
    HEADER_BYTES,
    Compressor,
    Header,
    check_vdtype,
    check_vector,
    nonfinite_error,
    read_header,
    write_header,
)
from decomp.errors import ConfigError, PayloadError
from decomp.kernels import NONFINITE, scatter_add, topk_pack
from decomp.rng import Key


def index_width(d: int) -> int:
    """Bytes per index: the narrowest of uint16/uint32 that can hold d - 1."""
    return 2 if d <= 1 << 16 else 4


class TopK(Compressor):
    """Top-k by |x_j| with deterministic ties (lowest index first).

    Give exactly one of ``k`` (entries kept) or ``ratio`` (k = max(1, round(ratio * d))).
    alpha = k/d. ``value_dtype`` (None, "float32", "float16", "bfloat16", "float64") sets the
    wire dtype of the kept values; None keeps the input's dtype, so float64 runs are exact.
    """
    value_dtype_on_wire = True

    kind = 1
    name = "topk"

    def __init__(self, k: int | None = None, *, ratio: float | None = None,
                 value_dtype: str | None = None) -> None:
        if (k is None) == (ratio is None):
            raise ConfigError("TopK needs exactly one of k or ratio")
        if k is not None and (int(k) != k or k < 1):
            raise ConfigError(f"TopK k must be a positive integer, got {k!r}")
        if ratio is not None and not (0.0 < ratio <= 1.0):
            raise ConfigError(f"TopK ratio must be in (0, 1], got {ratio!r}")
        self.k = None if k is None else int(k)
        self.ratio = ratio
        self.value_dtype = check_value_dtype(value_dtype)

    def __repr__(self) -> str:
        arg = f"k={self.k}" if self.k is not None else f"ratio={self.ratio}"
        vd = f", value_dtype={self.value_dtype!r}" if self.value_dtype else ""
        return f"TopK({arg}{vd})"

    def k_for(self, d: int) -> int:
        """Entries kept for a length-d vector; raises ConfigError if k > d."""
        k = self.k if self.k is not None else max(1, round(self.ratio * d))
        if k > d:
            raise ConfigError(f"TopK k={k} exceeds the vector length d={d}")
        return k

    def check(self, d: int) -> None:
        super().check(d)
        if d > 1 << 32:
            raise ConfigError(f"TopK supports d <= 2**32, got {d}")
        self.k_for(d)

    def alpha(self, d: int) -> float:
        return self.k_for(d) / d

    def _layout(self, d: int, k: int, code: int) -> tuple[int, int, int]:
        """(values offset, indices offset, total bytes): larger item size first, no padding."""
        vb, ib = itemsize(code), index_width(d)
        if vb >= ib:
            v0, i0 = HEADER_BYTES, HEADER_BYTES + k * vb
        else:
            i0, v0 = HEADER_BYTES, HEADER_BYTES + k * ib
        return v0, i0, HEADER_BYTES + k * (vb + ib)

    def payload_bytes(self, d: int, dtype: np.dtype | type = np.float64) -> int:
        return self._layout(d, self.k_for(d), wire_code(self.value_dtype, np.dtype(dtype)))[2]

    def encode(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        x = check_vector(x)
        d = x.size
        self.check(d)
        k = self.k_for(d)
        code = wire_code(self.value_dtype, x.dtype)
        v0, i0, total = self._layout(d, k, code)
        payload = np.empty(total, dtype=np.uint8)
        write_header(payload, Header(self.kind, code, index_width(d), k, d))
        itype = np.uint16 if index_width(d) == 2 else np.uint32
        idx_out = payload[i0:i0 + k * index_width(d)].view(itype)
        direct = code in (0, 1) and np.dtype(x.dtype).itemsize == itemsize(code)
        vals = payload[v0:v0 + k * itemsize(code)].view(x.dtype) if direct else \
            np.empty(k, dtype=x.dtype)
        if topk_pack(x, k, idx_out, vals) == NONFINITE:
            raise nonfinite_error(x, repr(self))
        if not direct:  # a dtype conversion on the wire
            to_wire(vals, code, payload[v0:v0 + k * itemsize(code)])
        return payload

    def _sections(self, payload: np.ndarray, d: int | None) -> tuple[np.ndarray, np.ndarray]:
        h = read_header(payload, self.kind, d)
        check_vdtype(h, self.value_dtype, "TopK")
        if h.flags != index_width(h.d):
            raise PayloadError(f"TopK payload index width {h.flags} does not fit d={h.d}")
        if not 1 <= h.count <= h.d:
            raise PayloadError(f"TopK payload count {h.count} outside [1, d={h.d}]")
        v0, i0, total = self._layout(h.d, h.count, h.vdtype)
        if payload.size != total:
            raise PayloadError(f"TopK payload has {payload.size} bytes, its header implies "
                               f"{total} (truncated or corrupted)")
        vals = from_wire(payload[v0:v0 + h.count * itemsize(h.vdtype)], h.vdtype)
        idx = payload[i0:i0 + h.count * h.flags].view(np.uint16 if h.flags == 2 else np.uint32)
        return vals, idx

    def decode_add(self, payload: np.ndarray, out: np.ndarray, scale: float = 1.0) -> None:
        vals, idx = self._sections(payload, out.size)
        bad = scatter_add(vals, idx, out, float(scale))
        if bad >= 0:
            raise PayloadError(f"TopK payload index {int(idx[bad])} at position {bad} is out of "
                               f"range for d={out.size} (corrupted)")

    def reference(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        """Dense Top-k by a full stable sort: order by (-|x_j|, j), keep the first k."""
        x = check_vector(x)
        if not np.all(np.isfinite(x)):
            raise nonfinite_error(x, repr(self))
        k = self.k_for(x.size)
        order = np.lexsort((np.arange(x.size), -np.abs(x)))[:k]
        out = np.zeros_like(x)
        code = wire_code(self.value_dtype, x.dtype)
        out[order] = round_like_wire(x[order], code)
        return out

