"""The typed contracts between layers are met by what the library builds: every registered
algorithm is an Algorithm, the numpy problems are gradient oracles, the MPI transports and
their timing / delay proxies satisfy the transport protocols, and the proxies are built from
the protocols' method lists (no method re-listed by hand)."""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from decomp.algorithms import REGISTRY, Env
from decomp.algorithms.protocols import Algorithm
from decomp.comm import MasterWorker, Neighborhood
from decomp.comm.delay import DelayedTransport
from decomp.comm.protocols import (
    COUNTED_CALLS,
    MASTER_WORKER_CALLS,
    NEIGHBOR_CALLS,
    MasterWorkerTransport,
    NeighborTransport,
)
from decomp.comm.timing import Stopwatch, TimedTransport
from decomp.data import load_dataset
from decomp.problems import GradientOracle, split_problem
from decomp.topologies import MixingMatrix


def test_every_registered_method_is_an_algorithm() -> None:
    from tests.unit.test_threads import _build

    for spec in REGISTRY.values():
        assert isinstance(_build(spec), Algorithm), spec.name


def test_numpy_problems_are_gradient_oracles() -> None:
    ds = load_dataset("synthetic", n_samples=20, n_features=3, seed=0)
    for kind in ("logistic", "least_squares"):
        assert isinstance(split_problem(ds, kind, 2)[0], GradientOracle)


def test_mpi_transports_and_their_proxies_satisfy_the_protocols() -> None:
    mw = MasterWorker(MPI.COMM_SELF)
    nb = Neighborhood(MixingMatrix(np.ones((1, 1))), MPI.COMM_SELF)
    try:
        assert isinstance(mw, MasterWorkerTransport) and isinstance(nb, NeighborTransport)
        assert nb.select(3) is nb and nb.peers == nb.sources == () and not nb.time_varying
        for tp in (mw, nb):
            for wrapped in (TimedTransport(tp, Stopwatch()), DelayedTransport(tp, 1e-6, 1)):
                assert wrapped.rank == tp.rank and wrapped.bytes is tp.bytes
        env = Env(nb, None, 1, 0, 0.1)
        assert env.worker == env.rank == 0 and env.key(4) == (0, 0, 4)
    finally:
        nb.close()


def test_the_proxies_wrap_exactly_the_protocols_counted_calls() -> None:
    assert set(COUNTED_CALLS) == set(MASTER_WORKER_CALLS) | set(NEIGHBOR_CALLS)
    for cls in (TimedTransport, DelayedTransport):
        for call in COUNTED_CALLS:
            assert call in vars(cls) or any(call in vars(k) for k in cls.__mro__[1:-1]), call
    for call in COUNTED_CALLS:  # each protocol names its calls as methods
        proto = MasterWorkerTransport if call in MASTER_WORKER_CALLS else NeighborTransport
        assert callable(getattr(proto, call))


def test_the_stream_allocator_reproduces_the_historical_keys() -> None:
    from decomp.algorithms.env import Stream, stream_key
    from decomp.rng import Key

    n, seed = 4, 9
    for w in range(n):
        assert stream_key(seed, w, n, 7) == Key(seed, w, 7)  # MW stream 0, gossip
        assert stream_key(seed, w, n, 7, Stream.SECOND) == Key(seed, w + n, 7)  # EF21+, BEER
        assert stream_key(seed, w, n, 7, Stream.MASTER) == Key(seed, 2 * n, 7)  # EF21-BC C_M
    assert stream_key(seed, None, n, 7, Stream.MASTER) == Key(seed, 2 * n, 7)
