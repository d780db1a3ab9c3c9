"""The 16-bit kernels (decomp.kernels.half) against numpy and decomp.compress._wire.to_wire:
widening every one of the 65,536 float16 and bfloat16 words; narrowing float32 and float64
values at every scale from float16's subnormals to its largest normal, every midpoint between
two float16 values and its neighbours (round half to even), and the refusal (False) of values
beyond the range or not finite; the fused mean equals the numpy expression."""

from __future__ import annotations

import numpy as np
import pytest

from decomp.compress._wire import to_wire
from decomp.kernels import half

WORDS = np.arange(65536, dtype=np.uint32).astype(np.uint16)


def _numpy(vals: np.ndarray, code: int) -> tuple[np.ndarray | None, bool]:
    buf = np.empty(vals.size * 2, dtype=np.uint8)
    try:
        to_wire(vals, code, buf)
    except FloatingPointError:
        return None, False
    return buf.view(np.uint16), True


def test_widening_every_word_is_exact() -> None:
    out = np.empty(65536, dtype=np.uint32)
    half.widen(WORDS, 2, out)
    want = WORDS.view(np.float16).astype(np.float32)
    got = out.view(np.float32)
    fin = np.isfinite(want)
    np.testing.assert_array_equal(got[fin], want[fin])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    half.widen(WORDS, 3, out)
    np.testing.assert_array_equal(out, WORDS.astype(np.uint32) << 16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("code", [2, 3])
def test_narrowing_rounds_as_numpy_at_every_scale(dtype: type, code: int) -> None:
    rng = np.random.default_rng(1)
    for scale in (1e-9, 1e-7, 3e-6, 6e-5, 1e-3, 1.0, 300.0, 3e4):
        v = (rng.standard_normal(20000) * scale).astype(dtype)
        out = np.empty(v.size, dtype=np.uint16)
        want, ok = _numpy(v, code)
        assert half.narrow(v, code, out) == ok
        if ok:
            np.testing.assert_array_equal(out, want, err_msg=f"scale {scale}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float16_midpoints_round_half_to_even(dtype: type) -> None:
    f = WORDS.view(np.float16).astype(np.float64)
    f = np.sort(f[np.isfinite(f)])
    mids = ((f[:-1] + f[1:]) / 2).astype(dtype)
    for v in (mids, np.nextafter(mids, dtype(np.inf)), np.nextafter(mids, dtype(-np.inf))):
        v = v[np.abs(v) < 65504]
        out = np.empty(v.size, dtype=np.uint16)
        assert half.narrow(v, 2, out)
        np.testing.assert_array_equal(out, _numpy(v, 2)[0])


def test_out_of_range_and_non_finite_are_refused() -> None:
    out = np.empty(1, dtype=np.uint16)
    for v, code in ((65520.0, 2), (-7e4, 2), (np.inf, 2), (np.nan, 3), (3.4e38, 3)):
        assert not half.narrow(np.array([v]), code, out), (v, code)
    assert half.narrow(np.array([65519.99]), 2, out) and out[0] == 0x7BFF  # 65504


@pytest.mark.parametrize("code", [2, 3])
def test_the_mean_is_the_numpy_expression(code: int) -> None:
    rng = np.random.default_rng(2)
    rows = np.empty((5, 1000), dtype=np.uint16)
    for r in range(5):
        assert half.narrow(rng.standard_normal(1000) * 10 ** (r - 2), code, rows[r])
    W = np.empty((5, 1000), dtype=np.uint32)
    for r in range(5):
        half.widen(rows[r], code, W[r])
    W = W.view(np.float32)
    acc = W[0].copy()
    for r in range(1, 5):
        acc = acc + W[r]
    want, _ = _numpy(acc / np.float32(5), code)
    out = np.empty(1000, dtype=np.uint16)
    assert half.mean_rows(rows, code, np.float32(5), out)
    np.testing.assert_array_equal(out, want)
