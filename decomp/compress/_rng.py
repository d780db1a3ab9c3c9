"""Randomness of the compressors, in plain numpy: the per-call seed and the SplitMix64 stream.

``derive_seed(key)`` is the only place a compressor turns its key into randomness: it takes the
first 64-bit output of ``decomp.rng.key_generator(key, Purpose.COMPRESS)``. Kernels then draw
``splitmix64(seed, i)`` (see :mod:`decomp.kernels.rng`); :func:`splitmix64_np` is the same
function vectorised in numpy, used by the dense references.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from decomp.errors import ConfigError
from decomp.rng import Key, Purpose, key_generator

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def check_key(key: Key | Sequence[int] | None, who: str) -> tuple[int, int, int]:
    """Validate a key (seed, rank, step) of non-negative integers; clear error otherwise."""
    if key is None:
        raise ConfigError(f"{who} is random: encode/reference need key=(seed, rank, step), "
                          "got None")
    try:
        seed, rank, step = (int(v) for v in key)
    except (TypeError, ValueError):
        raise ConfigError(f"{who}: key must be (seed, rank, step) integers, got {key!r}") from None
    if min(seed, rank, step) < 0:
        raise ConfigError(f"{who}: key entries must be >= 0, got {key!r}")
    return seed, rank, step


class StreamSeed(int):
    """A 64-bit stream seed derived already (e.g. one tensor's, by
    :class:`~decomp.compress.PerTensor`): passed as a compressor's ``key``, :func:`derive_seed`
    returns it unchanged."""


def tensor_seed(base: int, t: int) -> StreamSeed:
    """The stream seed of tensor t of a per-tensor compression whose call seed is ``base``:
    ``base`` itself for t = 0 (so one slot is the flat compressor), ``splitmix64(base, t)``
    (:func:`splitmix64_np`) for t >= 1."""
    if t == 0:
        return StreamSeed(base)
    return StreamSeed(int(splitmix64_np(base, t, 1)[0]))


def derive_seed(key: Key | Sequence[int] | None, who: str = "compressor") -> int:
    """The 64-bit stream seed of one compression: first output of the COMPRESS generator
    (a :class:`StreamSeed` is returned as is)."""
    if isinstance(key, StreamSeed):
        return int(key)
    k = check_key(key, who)
    gen = key_generator(k, Purpose.COMPRESS)
    return int(gen.bit_generator.random_raw())


def splitmix64_np(seed: int, start: int, n: int) -> np.ndarray:
    """splitmix64(seed, i) for i in [start, start + n), as uint64 (n,). Wraps mod 2^64."""
    z = np.uint64(seed) + (np.arange(start, start + n, dtype=np.uint64) + np.uint64(1)) * _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def u32_np(seed: int, d: int) -> np.ndarray:
    """The 32-bit draw u_j of every entry j < d: halves of splitmix64(seed, j // 2)."""
    h = splitmix64_np(seed, 0, (d + 1) // 2)
    return h.view(np.uint32)[:d]


def mulhi_np(h: np.ndarray, d: int) -> np.ndarray:
    """floor(h * d / 2^64) for uint64 h and d < 2^32 (exact, in 64-bit pieces)."""
    dd = np.uint64(d)
    hi = h >> np.uint64(32)
    lo = h & np.uint64(0xFFFFFFFF)
    return (hi * dd + ((lo * dd) >> np.uint64(32))) >> np.uint64(32)


def randk_indices_np(seed: int, d: int, k: int) -> np.ndarray:
    """The Rand-k selection (ascending int64 (k,)), by the rule of :mod:`decomp.kernels.randk`:
    first m = min(k, d - k) distinct candidates of the stream; the complement if m < k."""
    m = min(k, d - k)
    chosen = np.empty(0, dtype=np.int64)
    n = 0
    batch = max(64, 2 * m)
    cand = np.empty(0, dtype=np.uint64)
    while True:
        cand = np.concatenate([cand, mulhi_np(splitmix64_np(seed, n, batch), d)])
        n += batch
        _, first = np.unique(cand, return_index=True)
        if first.size >= m:
            first.sort()
            chosen = cand[first[:m]].astype(np.int64)
            break
        batch *= 2
    if m == k:
        return np.sort(chosen)
    mask = np.ones(d, dtype=bool)
    mask[chosen] = False
    return np.flatnonzero(mask)
