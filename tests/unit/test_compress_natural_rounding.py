"""Natural compression rounds up exactly when its draw is below the mantissa, at the boundary
random inputs never reach. Written for a gap mutation testing found (docs/testing.md,
"Mutation testing")."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_natural_rounds_up_exactly_when_the_draw_is_below_the_mantissa(dtype) -> None:
    """Natural compression rounds |x| = 2^e (1 + m) up iff the entry's 32-bit draw u, scaled
    to the mantissa width, is below the mantissa bits: tested right at the boundary (mantissa
    = scaled u - 1, = scaled u, = scaled u + 1), where random inputs never land. The kernel and
    the numpy reference agree there, and both round up only for the last."""
    from decomp.compress import Natural
    from decomp.compress._rng import u32_np
    from decomp.kernels.quant import natural_encode_f32, natural_encode_f64

    c, seed, d = Natural(), 12345, 3 * 64
    u = u32_np(seed, d).astype(np.uint64)
    if dtype == np.float32:  # up = (u >> 9) < m, m the 23-bit mantissa
        scaled, shift, ebits = u >> np.uint64(9), 23, np.uint64(127 + 3)
    else:  # up = (u << 20) < m, m the 52-bit mantissa
        scaled, shift, ebits = u << np.uint64(20), 52, np.uint64(1023 + 3)
    delta = np.tile(np.array([-1, 0, 1], np.int64), d // 3)
    ok = (scaled >= np.uint64(1)) & (scaled < np.uint64((1 << shift) - 1))
    mant = (scaled.astype(np.int64) + delta).astype(np.uint64)
    bits = (ebits << np.uint64(shift)) | mant
    bits[::2] |= np.uint64(1) << np.uint64(63 if dtype == np.float64 else 31)  # some negative
    x = bits.astype(np.uint64 if dtype == np.float64 else np.uint32).view(dtype)
    x = np.where(ok, x, dtype(1.0)).astype(dtype)
    codes, neg = c.codes_reference(x, seed)
    kc, ks = np.zeros(d, np.uint8), np.zeros((d + 7) // 8, np.uint8)
    if dtype == np.float32:
        assert natural_encode_f32(x.view(np.uint32), np.uint64(seed), kc, ks)
    else:
        assert natural_encode_f64(x, np.uint64(seed), kc, ks)
    assert np.array_equal(kc, codes)
    e = 127 + 3
    want = np.where(delta == 1, e + 1, e)
    assert np.array_equal(codes[ok].astype(np.int64), want[ok])
    assert ok.sum() > d // 2
