"""Single-process vectorized references of every algorithm (the test oracle).

:func:`simulate` covers the master–worker family, :func:`simulate_decentralized` the
decentralized one (X ∈ R^{n×d}, products with the mixing matrix W).

Written straight from the papers' equations on n x d arrays (row i = worker i), using each
compressor's plain-numpy ``reference`` formula and the same (seed, worker, step, purpose)
randomness as the MPI runtime, so a multi-rank run must match it iterate for iterate.
"""

from decomp.sim._common import Trace
from decomp.sim.decentralized import DecentralizedTrace, simulate_decentralized
from decomp.sim.masterworker import simulate

__all__ = ["DecentralizedTrace", "Trace", "simulate", "simulate_decentralized"]
