"""The quantizer kernels (QSGD, natural, sign) index inside their arrays on input spanning
several chunks (compiled again with bounds checking). Written for gaps mutation testing found
(docs/testing.md, "Mutation testing")."""

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
