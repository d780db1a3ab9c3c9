"""The 16-bit kernels (decomp.kernels.half) index inside their arrays: every kernel of the
module compiled again from its source with bounds checking (and calling the bounds-checked
versions of the module's other kernels) runs on inputs that take every branch — float32 and
float64, float16 and bfloat16, normals, subnormals, values past the range, inf and NaN, several
narrow32 blocks, every 16-bit word widened, a 5-row mean — without an IndexError, and gives
the same words and values as the cached build (the same code, so exact equality).

The compiled kernels do not check bounds, so a scratch array one element short (say, the
float64 path's one-element float32 buffer allocated empty) writes past its end and reads the
value back unnoticed; only a bounds-checked build sees it. Written for a gap mutation testing
found (docs/testing.md, "Mutation testing").
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from numba import njit
from numba.core.dispatcher import Dispatcher

from decomp.kernels import half


@pytest.fixture(scope="module")
def checked() -> dict:
    """The module's namespace with every kernel rebuilt with bounds checking (not cached);
    ``narrow`` (a Python dispatcher by dtype) rebuilt to call the checked kernels."""
    ns = dict(vars(half))
    for name, obj in vars(half).items():
        if isinstance(obj, Dispatcher):
            fn = types.FunctionType(obj.py_func.__code__, ns, name, obj.py_func.__defaults__)
            ns[name] = njit(boundscheck=True, nogil=True)(fn)
    ns["narrow"] = types.FunctionType(half.narrow.__code__, ns, "narrow")
    return ns


def _values(dtype: type) -> np.ndarray:
    rng = np.random.default_rng(11)
    parts = [rng.standard_normal(3000) * s for s in (1e-8, 3e-6, 1e-3, 1.0, 3e4)]
    parts.append(np.array([0.0, -0.0, 6.1e-5, -5.96e-8, 65504.0, 65519.0, 1 / 3, -2 / 3]))
    v = np.concatenate(parts).astype(dtype)
    return np.concatenate([v] * 2)  # 2 × 15 008 values: several 4096-value blocks


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("code", [2, 3])
def test_narrowing_indexes_inside_its_arrays(checked: dict, dtype: type, code: int) -> None:
    for extra in ([], [np.inf], [np.nan], [7e4], [-3.4e38]):
        v = np.concatenate([_values(dtype), np.array(extra, dtype=dtype)])
        want, got = np.empty(v.size, np.uint16), np.empty(v.size, np.uint16)
        ok = half.narrow(v, code, want)
        assert checked["narrow"](v, code, got) == ok
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("code", [2, 3])
def test_widening_and_the_mean_index_inside_their_arrays(checked: dict, code: int) -> None:
    words = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    want, got = np.empty(65536, np.uint32), np.empty(65536, np.uint32)
    half.widen(words, code, want)
    checked["widen"](words, code, got)
    np.testing.assert_array_equal(got, want)
    rows = np.empty((5, 2000), dtype=np.uint16)
    rng = np.random.default_rng(code)
    for r in range(5):
        assert half.narrow(rng.standard_normal(2000) * 10.0 ** (r - 2), code, rows[r])
    m1, m2 = np.empty(2000, np.uint16), np.empty(2000, np.uint16)
    ok = half.mean_rows(rows, code, np.float32(5), m1)
    assert checked["mean_rows"](rows, code, np.float32(5), m2) == ok
    np.testing.assert_array_equal(m2, m1)
