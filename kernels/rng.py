"""Counter-based random bits for kernels: the SplitMix64 stream, addressable by position.

Draw number i of a stream is ``splitmix64(seed, i)``: the (i+1)-th output of the SplitMix64
generator started at ``seed`` (Steele, Lea, Flood 2014; the state advances by the golden-ratio
gamma and the output is a 64-bit finaliser, a bijection). Because the i-th output is a pure
function of (seed, i), kernels can draw in any order and in SIMD lanes, and a plain-numpy
reference (:func:`decomp.compress._rng.splitmix64_np`) reproduces every bit. Quantizers use 32
bits per entry: entry j takes the low (j even) or high (j odd) half of draw j // 2
(:func:`fill_u32`); Rand-k uses whole 64-bit draws.

``seed`` itself comes from ``decomp.rng.key_generator(key, Purpose.COMPRESS)`` (see
:func:`decomp.compress._rng.derive_seed`), so all randomness is a function of (seed, rank, step,
purpose).
"""

from __future__ import annotations

import numpy as np

from decomp.kernels.jit import njit

GAMMA = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
_ONE = np.uint64(1)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_S32 = np.uint64(32)
_LO32 = np.uint64(0xFFFFFFFF)
TWO_M53 = 2.0 ** -53


@njit(inline="always")
def splitmix64(seed: np.uint64, j: np.uint64) -> np.uint64:
    """The (j+1)-th SplitMix64 output for ``seed`` (all arithmetic mod 2^64)."""
    z = seed + (j + _ONE) * GAMMA
    z = (z ^ (z >> _S30)) * MIX1
    z = (z ^ (z >> _S27)) * MIX2
    return z ^ (z >> _S31)


@njit(inline="always")
def uniform53(h: np.uint64) -> float:
    """A float64 in [0, 1) from the top 53 bits of h (multiples of 2^-53)."""
    return float(h >> _S11) * TWO_M53


@njit(inline="always")
def mulhi_index(h: np.uint64, d: np.uint64) -> np.uint64:
    """floor(h * d / 2^64) for d < 2^32: a uniform index in [0, d) (bias below d / 2^64)."""
    hi = h >> _S32
    lo = h & _LO32
    return (hi * d + ((lo * d) >> _S32)) >> _S32


@njit(cache=True, nogil=True)
def splitmix64_fill(seed: np.uint64, start: int, out: np.ndarray) -> None:
    """out[i] = splitmix64(seed, start + i); out: uint64 (n,). For tests and references."""
    s = np.uint64(start)
    for i in range(out.size):
        out[i] = splitmix64(seed, s + np.uint64(i))


@njit(cache=True, nogil=True)
def fill_u32(seed: np.uint64, start: int, n: int, hbuf: np.ndarray) -> np.ndarray:
    """The 32-bit draws u_j, j in [start, start + n) (start even), as a uint32 view.

    u_j is the low (j even) or high (j odd) half of splitmix64(seed, j // 2): in numpy,
    ``splitmix64_np(seed, 0, ceil(d / 2)).view(np.uint32)[:d]`` on a little-endian machine.
    hbuf: uint64 scratch with at least ceil(n / 2) slots.
    """
    m = (n + 1) // 2
    h0 = np.uint64(start // 2)
    for i in range(m):
        hbuf[i] = splitmix64(seed, h0 + np.uint64(i))
    return hbuf[:m].view(np.uint32)
