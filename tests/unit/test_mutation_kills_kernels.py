"""Properties of the kernels that surviving mutants showed no test stated (docs/testing.md,
"Mutation testing"). Each test names the property it protects."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from decomp.kernels import quant
from decomp.kernels.quant import _CH

# Entries spanning three chunks, the middle one full: a chunk's slice bounds (base, base + n)
# then differ from every bitwise shortcut (base | n == base for the second full chunk).
D = 2 * _CH + 37


def checked(kernel):
    """The kernel compiled again from its source with bounds checking (not cached)."""
    return njit(boundscheck=True)(kernel.py_func)


def _x(dtype) -> np.ndarray:
    rng = np.random.default_rng(17)
    x = rng.standard_normal(D).astype(dtype)
    x[::5] = 0.0
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_qsgd_kernels_index_inside_their_arrays_on_multi_chunk_input(dtype):
    """Every array access of the QSGD encode/decode stays inside the chunk views it slices
    (bounds-checked build raises no IndexError) and the bounds-checked build gives the same
    bytes and values as the cached one (the same code, so exact equality)."""
    x, s, lbits, seed = _x(dtype), 5, 3, np.uint64(99)
    norm = float(np.linalg.norm(x.astype(np.float64)))
    nbytes = (D * (lbits + 1) + 7) // 8
    bodies = []
    for enc in (quant.qsgd_encode, checked(quant.qsgd_encode)):
        body = np.zeros(nbytes, np.uint8)
        enc(x, s / norm, s, lbits, seed, body)
        bodies.append(body)
    assert np.array_equal(bodies[0], bodies[1])
    outs = []
    for dec in (quant.qsgd_decode_add, checked(quant.qsgd_decode_add)):
        out = np.zeros(D, dtype)
        assert dec(bodies[0], D, s, lbits, norm, out, 1.0, False) == -1
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_natural_kernels_index_inside_their_arrays_on_multi_chunk_input(dtype):
    """Natural compression encode/decode: the same two properties as for QSGD."""
    x, seed = _x(dtype), np.uint64(7)
    enc = quant.natural_encode_f32 if dtype == np.float32 else quant.natural_encode_f64
    arg = x.view(np.uint32) if dtype == np.float32 else x
    coded = []
    for e in (enc, checked(enc)):
        codes, signs = np.zeros(D, np.uint8), np.zeros((D + 7) // 8, np.uint8)
        assert e(arg, seed, codes, signs)
        coded.append((codes, signs))
    assert np.array_equal(coded[0][0], coded[1][0])
    assert np.array_equal(coded[0][1], coded[1][1])
    outs = []
    for dec in (quant.natural_decode_add, checked(quant.natural_decode_add)):
        out = np.zeros(D, dtype)
        assert dec(coded[0][0], coded[0][1], out, 1.0, False) == -1
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])


def test_sign_kernels_index_inside_their_arrays_on_multi_chunk_input():
    """Sign encode/decode: the same two properties."""
    x = _x(np.float32)
    packed = []
    for enc in (quant.sign_encode, checked(quant.sign_encode)):
        signs = np.zeros((D + 7) // 8, np.uint8)
        enc(x, signs)
        packed.append(signs)
    assert np.array_equal(packed[0], packed[1])
    outs = []
    for dec in (quant.sign_decode_add, checked(quant.sign_decode_add)):
        out = np.zeros(D, np.float32)
        dec(packed[0], np.float32(0.5), out, 1.0, False)
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])


# Every fused update kernel returns "the new values are all finite". A value equal to the
# largest finite float is finite; NaN, +inf and -inf are not.
def _fused_cases(dtype):
    from decomp.kernels import fused

    t = np.dtype(dtype).type
    one, two = t(1.0), t(2.0)

    def vec(v):
        return np.array([0.5, v, -0.25], dtype)

    return {
        "descend": lambda v: fused.descend(vec(v), one, np.zeros(3, dtype)),
        "descend_mean": lambda v: fused.descend_mean(vec(v), one, np.zeros(3, dtype), two),
        "axpy": lambda v: fused.axpy(vec(v), one, np.zeros(3, dtype)),
        "momentum": lambda v: fused.momentum(vec(v), np.zeros(3, dtype), np.zeros(3, dtype),
                                             one, t(0.5), one, False),
        "momentum_nesterov": lambda v: fused.momentum(vec(v), np.zeros(3, dtype),
                                                      np.zeros(3, dtype), one, t(0.5), one,
                                                      True),
        "gossip_mix": lambda v: fused.gossip_mix(np.empty(3, dtype), vec(v),
                                                 np.zeros((1, 3), dtype), one,
                                                 np.ones(1, dtype), one, np.zeros(3, dtype)),
        "apply_dense": lambda v: fused.apply_dense(np.zeros(3, dtype), vec(v), one, one),
        "all_finite": lambda v: fused.all_finite(vec(v)),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel", list(_fused_cases(np.float64)))
def test_fused_kernels_report_finiteness_exactly(kernel, dtype):
    """True for finite results including ±max (the boundary is finite), False as soon as one
    entry is NaN, +inf or -inf."""
    run = _fused_cases(dtype)[kernel]
    big = np.finfo(dtype).max
    assert bool(run(0.0))
    assert bool(run(big)) and bool(run(-big))
    for bad in (np.nan, np.inf, -np.inf):
        assert not bool(run(bad)), f"{kernel} called {bad} finite"


@pytest.mark.parametrize("cap", [1, 4, 7, 8, 16])
def test_topk_collect_stores_every_candidate_or_reports_overflow(cap):
    """``_collect`` either stores every entry whose key is >= t (return value = their count,
    <= the buffer size) or returns more than the buffer size, so the caller grows it and
    collects again. It switches to counting as soon as a chunk's hot columns could overflow
    (8 rows per hot column), even if fewer entries are candidates; that must still read as
    an overflow."""
    from decomp.kernels.topk import ABS32, _collect

    x = np.zeros(3 * 1024 + 5, np.float32)
    x[[5, 2048 + 7, 3 * 1024 + 2]] = [3.0, -2.0, 4.0]  # candidates in chunks 0, 2 and the tail
    t = np.float32(1.0).view(np.uint32)
    cidx, cbits = np.zeros(cap, np.uint32), np.zeros(cap, np.uint32)
    p = int(_collect(x.view(np.uint32), t, ABS32, np.uint32(0x7F800000), cidx, cbits))
    if p <= cap:
        assert p == 3
        assert cidx[:3].tolist() == [5, 2048 + 7, 3 * 1024 + 2]
        assert np.array_equal(cbits[:3], x[cidx[:3]].view(np.uint32))
    else:
        assert cap < 8 + 8  # only a buffer too small for the hot columns may overflow
