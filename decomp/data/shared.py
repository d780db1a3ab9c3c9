"""A dataset read once per node: one rank of each shared-memory node parses the file, the
others receive its arrays (issue 23, start-up).

Every rank of a run needs the same :class:`~decomp.data.tabular.Dataset` (each builds its
shard and, for a step size ``"theory"``, every worker's smoothness constant). Parsing a LIBSVM
file on every rank costs the parse (and scikit-learn's import, ~0.8 s a rank) times the ranks
of the node, all on the node's cores at once. :func:`load_dataset_once` splits the world into
shared-memory nodes (``MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)``); the node's first rank
calls :func:`~decomp.data.tabular.load_dataset` and broadcasts, within the node, either the
error it raised (every rank of the node raises the same one) or the arrays: dense ``A`` or a
CSR's data, indices and indptr, and ``b``, by buffer (no pickling of the arrays). The values
are the leader's bytes, so every rank holds exactly what it would have parsed itself.

While the leader parses, the others wait in a nonblocking barrier tested every millisecond
with a sleep in between: a blocking MPI call would spin (MPICH polls) and take the cores the
leader needs when the node is oversubscribed.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from decomp.data.tabular import Dataset, load_dataset
from decomp.errors import ConfigError, DataError

#: DECOMP_DATA_ONCE=0: every rank parses the dataset itself (the behaviour before; a check)
ONCE_ENV = "DECOMP_DATA_ONCE"


def node_comm(comm: Any) -> Any:
    """The ranks of ``comm`` that share this rank's memory (a node), ordered by rank."""
    from mpi4py import MPI

    return comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())


def load_dataset_once(name: str, comm: Any = None, **kw: Any) -> Dataset:
    """:func:`~decomp.data.tabular.load_dataset` (same arguments) read by one rank per node
    of ``comm`` and broadcast to the node's others; without ``comm``, a one-rank ``comm`` or
    with ``DECOMP_DATA_ONCE=0`` every rank reads it itself."""
    if comm is None or comm.Get_size() == 1 or os.environ.get(ONCE_ENV, "1") == "0":
        return load_dataset(name, **kw)
    node = node_comm(comm)
    try:
        return _share(node, name, kw)
    finally:
        node.Free()


def _share(node: Any, name: str, kw: dict[str, Any]) -> Dataset:
    leader = node.Get_rank() == 0
    header: dict[str, Any] = {}
    ds: Dataset | None = None
    if leader:
        try:
            ds = load_dataset(name, **kw)
        except (DataError, ConfigError) as e:
            header = {"error": type(e).__name__, "message": str(e)}
        else:
            header = _header(ds)
        node.Ibarrier().Wait()
    else:
        wait_quietly(node.Ibarrier())
    header = node.bcast(header if leader else None, root=0)
    if "error" in header:
        cls = DataError if header["error"] == "DataError" else ConfigError
        raise cls(header["message"])
    arrays = _arrays(ds) if leader else [np.empty(shape, dtype=np.dtype(dt))
                                         for shape, dt in header["arrays"]]
    for a in arrays:
        if a.size:
            node.Bcast(a, root=0)
    if leader:
        assert ds is not None
        return ds
    return _dataset(header, arrays)


def wait_quietly(request: Any, interval_s: float = 0.001) -> None:
    """Complete ``request`` without spinning: test it, sleep, test again."""
    while not request.Test():
        time.sleep(interval_s)


def _arrays(ds: Dataset) -> list[np.ndarray]:
    import scipy.sparse as sp

    if sp.issparse(ds.A):
        A = ds.A
        return [np.ascontiguousarray(A.data), np.ascontiguousarray(A.indices),
                np.ascontiguousarray(A.indptr), np.ascontiguousarray(ds.b)]
    return [np.ascontiguousarray(ds.A), np.ascontiguousarray(ds.b)]


def _header(ds: Dataset) -> dict[str, Any]:
    import scipy.sparse as sp

    return {"name": ds.name, "sparse": bool(sp.issparse(ds.A)), "shape": tuple(ds.A.shape),
            "arrays": [(a.shape, a.dtype.str) for a in _arrays(ds)]}


def _dataset(header: dict[str, Any], arrays: list[np.ndarray]) -> Dataset:
    if header["sparse"]:
        import scipy.sparse as sp

        data, indices, indptr, b = arrays
        A: Any = sp.csr_matrix((data, indices, indptr), shape=header["shape"])
    else:
        A, b = arrays
    return Dataset(name=header["name"], A=A, b=b)


__all__ = ["ONCE_ENV", "load_dataset_once", "node_comm", "wait_quietly"]
