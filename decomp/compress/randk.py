"""Rand-k: keep k entries chosen uniformly at random without replacement.

Scaled (default): C(x) = (d/k) · sum_{j in S} x_j e_j, unbiased with omega = d/k - 1.
Unscaled (``scaled=False``): C(x) = sum_{j in S} x_j e_j, contractive with alpha = k/d
(E||C(x) - x||^2 = (1 - k/d)||x||^2 exactly).

The index set S is a function of the 64-bit stream seed of the call (``derive_seed(key)``, from
``key_generator(key, Purpose.COMPRESS)``) and is replayed by the receiver, so only the values
travel. Wire format (little endian)::

    header (16 B: count = k, flags bit 0 = scaled, vdtype = wire dtype of the values)
    uint64 seed (8 B)
    k values, ascending index order, in the wire dtype (the input's unless value_dtype is set)

payload_bytes = 16 + 8 + k * itemsize. The values are scaled by d/k at the sender (in the input
dtype), so ``decode_add(..., scale=1.0)`` adds exactly the wire values.
"""

from __future__ import annotations

import numpy as np

from decomp.compress._common import max_abs_checked
from decomp.compress._rng import derive_seed, randk_indices_np
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
    read_header,
    write_header,
)
from decomp.errors import ConfigError, PayloadError
from decomp.kernels.randk import gather_scaled, randk_indices
from decomp.kernels.topk import scatter_add
from decomp.rng import Key

SEED_BYTES = 8


class RandK(Compressor):
    """Rand-k with a shared seed. Give exactly one of ``k`` or ``ratio`` (k = max(1,
    round(ratio * d))). ``scaled=True``: unbiased, omega = d/k - 1; ``scaled=False``:
    contractive, alpha = k/d. ``value_dtype`` as for :class:`TopK`."""
    value_dtype_on_wire = True

    kind = 2
    name = "randk"
    is_random = True

    def __init__(self, k: int | None = None, *, ratio: float | None = None, scaled: bool = True,
                 value_dtype: str | None = None) -> None:
        if (k is None) == (ratio is None):
            raise ConfigError("RandK needs exactly one of k or ratio")
        if k is not None and (isinstance(k, bool) or int(k) != k or k < 1):
            raise ConfigError(f"RandK k must be a positive integer, got {k!r}")
        if ratio is not None and not (0.0 < ratio <= 1.0):
            raise ConfigError(f"RandK ratio must be in (0, 1], got {ratio!r}")
        self.k = None if k is None else int(k)
        self.ratio = ratio
        self.scaled = bool(scaled)
        self.is_unbiased = self.scaled  # type: ignore[misc]  # per instance
        self.value_dtype = check_value_dtype(value_dtype)

    def __repr__(self) -> str:
        arg = f"k={self.k}" if self.k is not None else f"ratio={self.ratio}"
        sc = "" if self.scaled else ", scaled=False"
        vd = f", value_dtype={self.value_dtype!r}" if self.value_dtype else ""
        return f"RandK({arg}{sc}{vd})"

    def k_for(self, d: int) -> int:
        """Entries kept for a length-d vector; ConfigError if k > d."""
        k = self.k if self.k is not None else max(1, round(self.ratio * d))
        if k > d:
            raise ConfigError(f"RandK k={k} exceeds the vector length d={d}")
        return k

    def check(self, d: int) -> None:
        super().check(d)
        if d >= 1 << 32:
            raise ConfigError(f"RandK supports d < 2**32, got {d}")
        self.k_for(d)

    def omega(self, d: int) -> float:
        if not self.scaled:
            return super().omega(d)
        return d / self.k_for(d) - 1.0

    def alpha(self, d: int) -> float:
        if self.scaled:
            return super().alpha(d)
        return self.k_for(d) / d

    def payload_bytes(self, d: int, dtype: np.dtype | type = np.float64) -> int:
        k = self.k_for(d)
        return HEADER_BYTES + SEED_BYTES + k * itemsize(wire_code(self.value_dtype,
                                                                  np.dtype(dtype)))

    def encode(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        x = check_vector(x)
        d = x.size
        self.check(d)
        k = self.k_for(d)
        seed = derive_seed(key, repr(self))
        max_abs_checked(x, repr(self))
        idx = np.empty(k, dtype=np.uint32)
        randk_indices(np.uint64(seed), d, k, idx)
        code = wire_code(self.value_dtype, x.dtype)
        v0 = HEADER_BYTES + SEED_BYTES
        payload = np.empty(v0 + k * itemsize(code), dtype=np.uint8)
        write_header(payload, Header(self.kind, code, int(self.scaled), k, d))
        payload[HEADER_BYTES:v0].view(np.uint64)[0] = seed
        direct = code in (0, 1) and x.dtype.itemsize == itemsize(code)
        vals = payload[v0:].view(x.dtype) if direct else np.empty(k, dtype=x.dtype)
        if not gather_scaled(x, idx, x.dtype.type(d / k), self.scaled, vals):
            raise FloatingPointError(f"{self!r}: a kept value times d/k = {d / k:g} overflows "
                                     f"{x.dtype}")
        if not direct:
            to_wire(vals, code, payload[v0:])
        return payload

    def _parse(self, payload: np.ndarray, d: int | None) -> tuple[Header, int, np.ndarray]:
        h = read_header(payload, self.kind, d)
        check_vdtype(h, self.value_dtype, "RandK")
        if h.flags != int(self.scaled):
            raise PayloadError(f"RandK payload has scaled={bool(h.flags & 1)}, this compressor "
                               f"is {self!r}")
        if not 1 <= h.count <= h.d or h.d >= 1 << 32:
            raise PayloadError(f"RandK payload count {h.count} outside [1, d={h.d}]")
        v0 = HEADER_BYTES + SEED_BYTES
        total = v0 + h.count * itemsize(h.vdtype)
        if payload.size != total:
            raise PayloadError(f"RandK payload has {payload.size} bytes, its header implies "
                               f"{total} (truncated or corrupted)")
        seed = int(payload[HEADER_BYTES:v0].view(np.uint64)[0])
        return h, seed, from_wire(payload[v0:], h.vdtype)

    def indices(self, payload: np.ndarray) -> np.ndarray:
        """The ascending indices (uint32 (k,)) a payload's values belong to (replayed)."""
        h, seed, _ = self._parse(payload, None)
        idx = np.empty(h.count, dtype=np.uint32)
        randk_indices(np.uint64(seed), h.d, h.count, idx)
        return idx

    def decode_add(self, payload: np.ndarray, out: np.ndarray, scale: float = 1.0) -> None:
        h, seed, vals = self._parse(payload, out.size)
        idx = np.empty(h.count, dtype=np.uint32)
        randk_indices(np.uint64(seed), h.d, h.count, idx)
        scatter_add(vals, idx, out, float(scale))

    def reference(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        """Dense Rand-k in numpy: the same seed, the selection by :func:`randk_indices_np`."""
        x = check_vector(x)
        d = x.size
        self.check(d)
        k = self.k_for(d)
        seed = derive_seed(key, repr(self))
        if not np.all(np.isfinite(x)):
            max_abs_checked(x, repr(self))  # raises the standard error
        idx = randk_indices_np(seed, d, k)
        vals = x[idx]
        if self.scaled:
            with np.errstate(over="ignore"):
                vals = vals * x.dtype.type(d / k)
            if not np.all(np.isfinite(vals)):
                raise FloatingPointError(f"{self!r}: a kept value times d/k overflows")
        out = np.zeros_like(x)
        out[idx] = round_like_wire(vals, wire_code(self.value_dtype, x.dtype))
        return out
