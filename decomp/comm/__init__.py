"""Transport: every byte that crosses MPI goes through here (buffer methods only, no pickling).

- :class:`MasterWorker`: payloads gathered at the master (``Gatherv``; a ``Gather`` of the
  sizes first only when they are not fixed), the model (``broadcast``) or a variable-size byte
  payload such as the compressed downlink (``broadcast_bytes``) sent with ``Bcast``, dense
  ``Allreduce`` for baselines.
- :class:`Neighborhood`: payload exchange with the neighbours of a mixing matrix W
  (persistent point-to-point requests, Isend/Irecv or neighbour collectives on the dist-graph
  communicator; also split into ``exchange_start`` / ``exchange_finish``), plus the
  all-reduce / all-gather of the decentralized family's baselines.

Each transport counts the bytes this rank sent (payloads) and received, so metrics report what
actually crossed MPI.

The contracts are :class:`MasterWorkerTransport` and :class:`NeighborTransport`
(:mod:`decomp.comm.protocols`); the timing and delay wrappers are one call-wrapping proxy
built from their method lists (:mod:`decomp.comm.proxy`); :mod:`decomp.comm.threads` runs n
ranks as threads of one process on the same protocols (debugging, notebooks, tests).
"""

from decomp.comm.counters import ByteCounter
from decomp.comm.masterworker import MASTER_MODES, MasterWorker
from decomp.comm.neighborhood import EXCHANGE_METHODS, Neighborhood
from decomp.comm.protocols import MasterWorkerTransport, NeighborTransport

__all__ = ["EXCHANGE_METHODS", "MASTER_MODES", "ByteCounter", "MasterWorker",
           "MasterWorkerTransport", "NeighborTransport", "Neighborhood"]
