"""Natural compression (Horváth et al. 2019): stochastic rounding of |x_j| to a power of two.

For 2^e <= |x_j| < 2^(e+1): C(x)_j = sign(x_j) · 2^e with probability 2 - |x_j|/2^e, else
sign(x_j) · 2^(e+1). Unbiased; E(C(x)_j - x_j)^2 <= x_j^2 / 8, so omega = 1/8.

Codes: an 8-bit exponent code c and a sign bit per entry. c = 0 encodes 0; c in 1..254
encodes 2^(c - 127), i.e. 2^-126 ... 2^127 (the float32 normal range; c is the biased float32
exponent, so a float32 decode is a bit assembly). Code 255 is invalid (a payload holding it is
refused as corrupted). Precisely, with u_j the 32-bit draw of entry j:

* float32, E = biased exponent, m = 23-bit mantissa: c = min(E + [u_j >> 9 < m], 254). This
  is exact: P(round up) = m / 2^23. Subnormals (E = 0, |x_j| < 2^-126) become 0 or 2^-126 with
  P(2^-126) = |x_j| / 2^-126: unbiased, but their variance |x_j|(2^-126 - |x_j|) is not bounded
  by x_j^2/8. Zero stays zero (c = 0, sign bit 0).
* float64, e = unbiased exponent, m = 52-bit mantissa: e >= 128 saturates to 2^127 (biased,
  only for |x_j| >= 2^128); -126 <= e <= 127 gives c = min(e + 127 + [u_j · 2^20 < m], 254)
  (P(up) = m/2^52 to within 2^-32); e < -126 gives 2^-126 with probability
  [u_j · 2^-32 < |x_j| · 2^126] and 0 otherwise (unbiased to within 2^-32 · 2^-126).
* Saturation: an entry in [2^127, 2^128) that would round up to 2^128 (not representable in
  float32) stays at 2^127; this is the only biased case for float32 inputs.

So the claims: unbiased for every |x_j| < 2^127; omega = 1/8 for entries with
2^-126 <= |x_j| < 2^127 (and zeros). Decoded values have the input's dtype.

Wire format: header (count = d, vdtype = input dtype) | d exponent codes (uint8) | ceil(d/8)
sign bytes (bit j = 1 for negative). 9 bits per entry: payload_bytes = 16 + d + ceil(d/8).
"""

from __future__ import annotations

import numpy as np

from decomp.compress._rng import derive_seed, u32_np
from decomp.compress._wire import VDTYPE_CODE
from decomp.compress.base import (
    HEADER_BYTES,
    DenseCodec,
    Header,
    check_vector,
    nonfinite_error,
    read_header,
    write_header,
)
from decomp.errors import PayloadError
from decomp.kernels.quant import natural_decode_add, natural_encode_f32, natural_encode_f64
from decomp.rng import Key


class Natural(DenseCodec):
    """Natural compression: sign + 8-bit exponent per entry; unbiased, omega = 1/8."""

    kind = 4
    name = "natural"
    is_unbiased = True
    is_random = True

    def __repr__(self) -> str:
        return "Natural()"

    def omega(self, d: int) -> float:
        return 0.125

    def payload_bytes(self, d: int, dtype: np.dtype | type = np.float64) -> int:
        return HEADER_BYTES + d + (d + 7) // 8

    def encode(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        x = check_vector(x)
        d = x.size
        seed = np.uint64(derive_seed(key, repr(self)))
        payload = np.empty(self.payload_bytes(d), dtype=np.uint8)
        write_header(payload, Header(self.kind, VDTYPE_CODE[x.dtype.name], 0, d, d))
        codes = payload[HEADER_BYTES:HEADER_BYTES + d]
        signs = payload[HEADER_BYTES + d:]
        if x.dtype == np.float32:
            ok = natural_encode_f32(x.view(np.uint32), seed, codes, signs)
        else:
            ok = natural_encode_f64(x, seed, codes, signs)
        if not ok:
            raise nonfinite_error(x, repr(self))
        return payload

    def _decode(self, payload: np.ndarray, out: np.ndarray, scale: float, assign: bool) -> None:
        h = read_header(payload, self.kind, out.size)
        if h.count != h.d or h.vdtype not in (0, 1) or h.flags != 0:
            raise PayloadError("Natural payload header is inconsistent (corrupted)")
        total = self.payload_bytes(h.d)
        if payload.size != total:
            raise PayloadError(f"Natural payload has {payload.size} bytes, its header implies "
                               f"{total} (truncated or corrupted)")
        bad = natural_decode_add(payload[HEADER_BYTES:HEADER_BYTES + h.d],
                                 payload[HEADER_BYTES + h.d:], out, float(scale), assign)
        if bad >= 0:
            raise PayloadError(f"Natural payload entry {bad} has the invalid exponent code 255 "
                               "(corrupted)")

    def codes_reference(self, x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(exponent codes uint8 (d,), negative flags bool (d,)) in plain numpy."""
        d = x.size
        u = u32_np(seed, d)
        if x.dtype == np.float32:
            b = x.view(np.uint32)
            e = (b >> np.uint32(23)) & np.uint32(0xFF)
            if np.any(e == 255):
                raise nonfinite_error(x, repr(self))
            up = (u >> np.uint32(9)) < (b & np.uint32(0x7FFFFF))
            c = np.minimum(e + up, np.uint32(254)).astype(np.int64)
            neg = (b >> np.uint32(31)).astype(bool) & (c != 0)
            return c.astype(np.uint8), neg
        b = x.view(np.uint64)
        e = ((b >> np.uint64(52)) & np.uint64(0x7FF)).astype(np.int64)
        if np.any(e == 0x7FF):
            raise nonfinite_error(x, repr(self))
        up = (u.astype(np.uint64) << np.uint64(20)) < (b & np.uint64(0xFFFFFFFFFFFFF))
        c_mid = np.minimum(e - 896 + up, 254)
        with np.errstate(over="ignore"):  # only entries below 2^-126 use c_low
            c_low = (u.astype(np.float64) * 2.0**-32 < np.abs(x) * 2.0**126).astype(np.int64)
        c = np.where(e >= 1151, 254, np.where(e >= 897, c_mid, c_low))
        neg = (b >> np.uint64(63)).astype(bool) & (c != 0)
        return c.astype(np.uint8), neg

    def reference(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        """Dense natural compression in numpy: same draws, same codes, 2^(c - 127) values."""
        x = check_vector(x)
        seed = derive_seed(key, repr(self))
        c, neg = self.codes_reference(x, seed)
        mag = np.where(c == 0, 0.0, np.ldexp(1.0, c.astype(np.int64) - 127)).astype(x.dtype)
        return np.where(neg, -mag, mag)
