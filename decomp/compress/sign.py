"""Sign compressors: 1 bit per entry.

``ScaledSign``: C(x) = (||x||_1 / d) · sign(x) (Bernstein et al. 2018; Karimireddy et al.
2019). Contractive: ||C(x) - x||^2 = ||x||^2 - ||x||_1^2/d <= (1 - 1/d)||x||^2, so alpha = 1/d
(the data-dependent ||x||_1^2 / (d ||x||_2^2) is usually much larger).

``Sign``: C(x) = sign(x), unscaled. Biased and *not* contractive (||sign(x) - x|| can exceed
||x|| by any factor), so it has neither alpha nor omega: EF21-type theory does not apply to it;
it is provided for signSGD-style baselines and majority-vote experiments.

sign(0) = +1 here (one bit cannot encode three states); the scaled-sign contraction identity
above holds with this convention, since sign(x_j) x_j = |x_j| for every j.

The scale ||x||_1 / d is computed in float64 with the kernels' lane order and rounded to the
nearest float32 (its wire format); decoded values have the input's dtype.

Wire formats: Sign: header (count = d) | ceil(d/8) sign bytes (bit j = 1 for x_j < 0),
payload_bytes = 16 + ceil(d/8). ScaledSign: header | float32 scale | ceil(d/8) sign bytes,
payload_bytes = 16 + 4 + ceil(d/8).
"""

from __future__ import annotations

import numpy as np

from decomp.compress._common import f32_nearest, max_abs_checked
from decomp.compress._ref import sum_abs
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
from decomp.errors import ConfigError, PayloadError
from decomp.kernels.quant import sign_decode_add, sign_encode
from decomp.kernels.reduce import lane_sum_abs
from decomp.rng import Key

SCALE_BYTES = 4


class Sign(DenseCodec):
    """C(x) = sign(x) in {-1, +1}^d (sign(0) = +1). Biased, not contractive: no alpha/omega."""

    kind = 5
    name = "sign"
    _scale_bytes = 0

    def __repr__(self) -> str:
        return "Sign()"

    def alpha(self, d: int) -> float:
        raise ConfigError("Sign() (unscaled) is not contractive: ||sign(x) - x|| is unbounded "
                          "relative to ||x||; use ScaledSign() (kind 'scaled_sign') for "
                          "error-feedback methods")

    def payload_bytes(self, d: int, dtype: np.dtype | type = np.float64) -> int:
        return HEADER_BYTES + self._scale_bytes + (d + 7) // 8

    def _scale(self, x: np.ndarray) -> np.float32:
        return np.float32(1.0)

    def _scale_ref(self, x: np.ndarray) -> np.float32:
        return np.float32(1.0)

    def encode(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        x = check_vector(x)
        d = x.size
        if not self._scale_bytes:
            max_abs_checked(x, repr(self))  # the scaled variant's sum spots NaN/inf itself
        scale = self._scale(x)
        payload = np.empty(self.payload_bytes(d), dtype=np.uint8)
        write_header(payload, Header(self.kind, VDTYPE_CODE[x.dtype.name], 0, d, d))
        b0 = HEADER_BYTES + self._scale_bytes
        if self._scale_bytes:
            payload[HEADER_BYTES:b0].view(np.float32)[0] = scale
        sign_encode(x, payload[b0:])
        return payload

    def _parse(self, payload: np.ndarray, d: int | None) -> tuple[int, float, np.ndarray]:
        h = read_header(payload, self.kind, d)
        if h.count != h.d or h.vdtype not in (0, 1) or h.flags != 0:
            raise PayloadError(f"{self!r} payload header is inconsistent (corrupted)")
        total = self.payload_bytes(h.d)
        if payload.size != total:
            raise PayloadError(f"{self!r} payload has {payload.size} bytes, its header implies "
                               f"{total} (truncated or corrupted)")
        b0 = HEADER_BYTES + self._scale_bytes
        mag = 1.0
        if self._scale_bytes:
            mag = float(payload[HEADER_BYTES:b0].view(np.float32)[0])
            if not (mag >= 0.0 and np.isfinite(mag)):
                raise PayloadError(f"{self!r} payload scale {mag} is not finite and >= 0")
        return h.vdtype, mag, payload[b0:]

    def _decode(self, payload: np.ndarray, out: np.ndarray, scale: float, assign: bool) -> None:
        _, mag, signs = self._parse(payload, out.size)
        sign_decode_add(signs, out.dtype.type(mag), out, float(scale), assign)

    def reference(self, x: np.ndarray, key: Key | tuple[int, int, int] | None = None) -> np.ndarray:
        """Dense (scaled) sign in numpy: where(x < 0, -m, m) with m the float32 wire scale."""
        x = check_vector(x)
        if not np.all(np.isfinite(x)):
            raise nonfinite_error(x, repr(self))
        m = x.dtype.type(self._scale_ref(x))
        return np.where(x < 0, -m, m).astype(x.dtype)


class ScaledSign(Sign):
    """C(x) = (||x||_1 / d) · sign(x): contractive, alpha = 1/d; 1 bit per entry + float32."""

    kind = 6
    name = "scaled_sign"
    _scale_bytes = SCALE_BYTES

    def __repr__(self) -> str:
        return "ScaledSign()"

    def alpha(self, d: int) -> float:
        return 1.0 / d

    def _scale(self, x: np.ndarray) -> np.float32:
        l1 = lane_sum_abs(x, 1, 1.0)
        if not np.isfinite(l1):
            max_abs_checked(x, repr(self))  # NaN/inf input: the standard error
        return f32_nearest(l1 / x.size, f"{self!r}: ||x||_1/d")

    def _scale_ref(self, x: np.ndarray) -> np.float32:
        return f32_nearest(sum_abs(x, 1) / x.size, f"{self!r}: ||x||_1/d")
