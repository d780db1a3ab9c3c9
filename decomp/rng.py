"""Counter-based randomness: every draw is a pure function of (seed, rank, step, purpose).

The MPI run and the single-process reference (:mod:`decomp.sim`) call the same function with
the same four integers, so they draw the same numbers and runs repeat bit for bit, whatever
the number of ranks or the order in which ranks get there.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import numpy as np


class Purpose(IntEnum):
    """What a random stream is used for; part of the seed so streams never collide."""

    INIT = 0  # starting point x^0
    SHARD = 1  # iid partition of the data
    MINIBATCH = 2  # minibatch indices
    COMPRESS = 3  # random compressors (Rand-k, QSGD, natural)
    DATA = 4  # synthetic data generation
    PARTICIPATION = 5  # the workers taking part in a step (EF21-PP)


class Key(NamedTuple):
    """Identifies one random draw: ``(seed, rank, step)``; ``rank`` is the worker index."""

    seed: int
    rank: int
    step: int


def generator(seed: int, rank: int, step: int, purpose: Purpose | int) -> np.random.Generator:
    """A fresh PCG64 generator for (seed, rank, step, purpose); all four must be >= 0."""
    seq = np.random.SeedSequence([seed, rank, step, int(purpose)])
    return np.random.Generator(np.random.PCG64(seq))


def key_generator(key: Key | tuple[int, int, int], purpose: Purpose | int) -> np.random.Generator:
    """:func:`generator` for a :class:`Key`."""
    seed, rank, step = key
    return generator(seed, rank, step, purpose)
