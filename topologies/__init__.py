"""Topologies for decentralized training: graphs -> mixing matrix W -> MPI neighbourhood.

Typical use::

    from decomp.topologies import mixing_matrix, communicator
    W = mixing_matrix("ring", comm.size)            # validated MixingMatrix, Metropolis weights
    print(W.rho, W.spectral_gap, W.neighbors(comm.rank))
    nc = communicator(W, comm)                      # dist-graph communicator (mpi4py, lazily)
    x_mixed = nc.mix(x)                             # sum_j W[rank, j] x_j

Nothing here imports mpi4py: :func:`communicator` imports it when called. See docs/topologies.md.
"""

from __future__ import annotations

from .comm import NeighborComm, communicator, schedule_communicators
from .errors import TopologyError
from .factory import is_matrix_file, mixing_matrix, mixing_schedule, resolve_mixing
from .graphs import (
    GRAPH_GENERATORS,
    Graph,
    complete,
    edge_list,
    erdos_renyi,
    exponential,
    hypercube,
    make_graph,
    near_square,
    random_regular,
    read_edge_list,
    ring,
    star,
    torus,
)
from .mixing import MixingMatrix, spectrum
from .schedule import (
    MixingSchedule,
    OnePeerExponential,
    StaticSchedule,
    is_schedule,
    one_peer_exponential,
    one_peer_hypercube,
    one_peer_period,
)
from .validation import check_mixing_matrix, default_tol
from .weights import (
    WEIGHT_SCHEMES,
    from_file,
    lazy,
    load_matrix,
    make_weights,
    max_degree,
    metropolis_hastings,
)

__all__ = [
    "GRAPH_GENERATORS",
    "WEIGHT_SCHEMES",
    "Graph",
    "MixingMatrix",
    "MixingSchedule",
    "NeighborComm",
    "OnePeerExponential",
    "StaticSchedule",
    "TopologyError",
    "check_mixing_matrix",
    "communicator",
    "complete",
    "default_tol",
    "edge_list",
    "erdos_renyi",
    "exponential",
    "from_file",
    "hypercube",
    "is_matrix_file",
    "is_schedule",
    "lazy",
    "load_matrix",
    "make_graph",
    "make_weights",
    "max_degree",
    "metropolis_hastings",
    "mixing_matrix",
    "mixing_schedule",
    "resolve_mixing",
    "near_square",
    "one_peer_exponential",
    "one_peer_hypercube",
    "one_peer_period",
    "random_regular",
    "schedule_communicators",
    "read_edge_list",
    "ring",
    "spectrum",
    "star",
    "torus",
]

