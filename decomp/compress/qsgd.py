"""QSGD with s levels (Alistarh et al. 2017): unbiased, omega = min(d/s^2, sqrt(d)/s).

C(x)_j = ||x||_2 · sign(x_j) · xi_j / s, where xi_j is the stochastic rounding of
r_j = s |x_j| / ||x||_2 to floor(r_j) or floor(r_j) + 1 (probability r_j - floor(r_j)).

Precisely, with N the wire norm (||x||_2 computed in float64 in a fixed lane order and rounded
*up* to float32; float64 inputs are scaled by a power of two for the sum of squares) and
f = s / N computed in float64: xi_j = min(floor(|x_j| · f + u_j · 2^-32), s) in float64, with
u_j the 32-bit draw of entry j (``decomp.kernels.rng.fill_u32``): the stochastic rounding of
r_j = |x_j| · f, up with probability r_j - floor(r_j) (to within 2^-32). The decoded value is
±(N · xi_j) / s, computed in float64 and rounded once to the output dtype (the input's).
Rounding N up makes r_j <= s, so the clamp to s only guards against the last ulp;
E[xi_j] = r_j up to the 2^-32 resolution of u_j.
Inputs whose norm exceeds the float32 range are refused (FloatingPointError).

Wire format: header (count = d, flags = bits per entry b, vdtype = input dtype) | float32 N |
d codes of b = 1 + ceil(log2(s + 1)) bits, bit-packed little-endian (code = level | sign << L,
sign = 1 for x_j < 0 and level > 0). payload_bytes = 16 + 4 + ceil(d · b / 8).
"""

from __future__ import annotations

import numpy as np

from decomp.compress._common import norm2_wire, norm2_wire_ref
from decomp.compress._rng import derive_seed, u32_np
from decomp.compress._wire import VDTYPE_CODE
from decomp.compress.base import (
    HEADER_BYTES,
    DenseCodec,
    Header,
    check_vector,
    read_header,
    write_header,
)
from decomp.errors import ConfigError, PayloadError
from decomp.kernels.bits import packed_bytes
from decomp.kernels.quant import qsgd_decode_add, qsgd_encode
from decomp.rng import Key

NORM_BYTES = 4
MAX_LEVELS = (1 << 31) - 1


class QSGD(DenseCodec):
    """QSGD quantization with ``levels`` = s >= 1 (s = 1: ternary {-N, 0, N})."""

    kind = 3
    name = "qsgd"
    is_unbiased = True
    is_random = True

    def __init__(self, levels: int) -> None:
        if isinstance(levels, bool) or int(levels) != levels or not 1 <= levels <= MAX_LEVELS:
            raise ConfigError(f"QSGD levels s must be an integer in [1, 2**31 - 1], "
                              f"got {levels!r}")
        self.levels = int(levels)
        self.lbits = self.levels.bit_length()  # ceil(log2(s + 1))
        self.bits = self.lbits + 1

    def __repr__(self) -> str:
        return f"QSGD(levels={self.levels})"

    def omega(self, d: int) -> float:
        s = self.levels
        return min(d / s**2, d**0.5 / s)

    def payload_bytes(self, d: int, dtype: np.dtype | type = np.float64) -> int:
        return HEADER_BYTES + NORM_BYTES + packed_bytes(d, self.bits)

    def encode(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        x = check_vector(x)
        d = x.size
        seed = derive_seed(key, repr(self))
        norm = norm2_wire(x, repr(self))
        f = self.levels / float(norm) if norm > 0 else 0.0
        payload = np.empty(self.payload_bytes(d), dtype=np.uint8)
        write_header(payload, Header(self.kind, VDTYPE_CODE[x.dtype.name], self.bits, d, d))
        payload[HEADER_BYTES:HEADER_BYTES + NORM_BYTES].view(np.float32)[0] = norm
        qsgd_encode(x, f, self.levels, self.lbits, np.uint64(seed),
                    payload[HEADER_BYTES + NORM_BYTES:])
        return payload

    def _decode(self, payload: np.ndarray, out: np.ndarray, scale: float, assign: bool) -> None:
        h = read_header(payload, self.kind, out.size)
        if h.flags != self.bits or h.count != h.d or h.vdtype not in (0, 1):
            raise PayloadError(f"QSGD payload header (bits={h.flags}, count={h.count}) does not "
                               f"match {self!r} (bits={self.bits})")
        total = self.payload_bytes(h.d)
        if payload.size != total:
            raise PayloadError(f"QSGD payload has {payload.size} bytes, its header implies "
                               f"{total} (truncated or corrupted)")
        norm = float(payload[HEADER_BYTES:HEADER_BYTES + NORM_BYTES].view(np.float32)[0])
        if not (norm >= 0.0 and np.isfinite(norm)):
            raise PayloadError(f"QSGD payload norm {norm} is not a finite non-negative number")
        bad = qsgd_decode_add(payload[HEADER_BYTES + NORM_BYTES:], h.d, self.levels, self.lbits,
                              norm, out, float(scale), assign)
        if bad >= 0:
            raise PayloadError(f"QSGD payload entry {bad} has a level above s={self.levels} "
                               "(corrupted)")

    def reference(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        """Dense QSGD in numpy, same norm, same draws, same float64 operations."""
        x = check_vector(x)
        s = self.levels
        seed = derive_seed(key, repr(self))
        norm = norm2_wire_ref(x, repr(self))
        f = s / float(norm) if norm > 0 else 0.0
        u = u32_np(seed, x.size).astype(np.float64) * 2.0**-32
        lev = np.minimum(np.floor(np.abs(x.astype(np.float64)) * f + u).astype(np.uint32),
                         np.uint32(s))
        neg = (x < 0) & (lev > 0)
        mag = ((float(norm) * lev.astype(np.float64)) / s).astype(x.dtype)
        return np.where(neg, -mag, mag)
