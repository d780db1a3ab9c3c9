"""Who takes part in a step of a partial-participation method (EF21-PP): a pure function of
(seed, step), drawn from the stream (seed, 0, step, :attr:`~decomp.rng.Purpose.PARTICIPATION`),
so every rank, the reference and a resumed run agree without a message.

``sampling = "bernoulli"``: each of the n workers independently with probability p (the set may
be empty); ``"fixed"``: exactly m = max(1, ⌊p n⌋) workers, uniformly without replacement (the
EF21-PP authors' experiments), so each worker takes part with probability m/n.
"""

from __future__ import annotations

import numpy as np

from decomp.rng import Purpose, generator

SAMPLINGS = ("bernoulli", "fixed")


def participant_count(n: int, p: float) -> int:
    """m of ``sampling = "fixed"``: max(1, ⌊p n⌋) workers per step."""
    return max(1, int(np.floor(p * n + 1e-9)))


def participation_probability(n: int, p: float, sampling: str) -> float:
    """Prob(i ∈ S_t) for every worker i: p, or m/n for a fixed count m."""
    return p if sampling == "bernoulli" else participant_count(n, p) / n


def participants(seed: int, step: int, n: int, p: float, sampling: str,
                 out: np.ndarray | None = None) -> np.ndarray:
    """S_t as an (n,) bool mask over the workers, written into ``out`` if given."""
    mask = np.empty(n, dtype=bool) if out is None else out
    rng = generator(seed, 0, step, Purpose.PARTICIPATION)
    if sampling == "bernoulli":
        np.less(rng.random(n), p, out=mask)
    else:
        mask[:] = False
        mask[rng.choice(n, size=participant_count(n, p), replace=False)] = True
    return mask
