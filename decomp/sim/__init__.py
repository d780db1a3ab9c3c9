"""Single-process vectorized references of every algorithm (the test oracle).

:func:`simulate` covers the master–worker family, :func:`simulate_decentralized` the
decentralized one (X ∈ R^{n×d}, products with the mixing matrix W).

Written straight from the papers' equations on n x d arrays (row i = worker i), using each
compressor's plain-numpy ``reference`` formula and the same (seed, worker, step, purpose)
randomness as the MPI runtime, so a multi-rank run must match it iterate for iterate.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from decomp.problems import Problem
from decomp.sim import decentralized as _gossip
from decomp.sim._common import Trace
from decomp.sim.beer import simulate_beer
from decomp.sim.decentralized import DecentralizedTrace
from decomp.sim.masterworker import simulate


def simulate_decentralized(algorithm: str, problems: Sequence[Problem], x0: np.ndarray, W: Any,
                           **kwargs: Any) -> DecentralizedTrace:
    """The reference of a decentralized ``algorithm``: ``beer`` from :mod:`decomp.sim.beer`
    (:func:`~decomp.sim.beer.simulate_beer`), every other name from
    :func:`decomp.sim.decentralized.simulate_decentralized` (same keywords)."""
    if algorithm == "beer":
        return simulate_beer(problems, x0, W, **kwargs)
    return _gossip.simulate_decentralized(algorithm, problems, x0, W, **kwargs)


__all__ = ["DecentralizedTrace", "Trace", "simulate", "simulate_beer", "simulate_decentralized"]
