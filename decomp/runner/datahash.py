"""The data a run trained on, as one sha256: part of every checkpoint's fingerprint, so a resume
on changed data (a data file replaced, labels flipped, another shard rule) is refused.

It is a hash of the loaded arrays, not of a file: what the methods saw after parsing, scaling
and sharding. Each rank hashes the arrays it holds (the numpy problems' A and b of every
worker it built; a torch workload's train and test sets and its shards), and the ranks' hashes
are combined in rank order (one allgather), so every rank holds the same value.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import scipy.sparse as sp

#: the fingerprint key of the data's hash (checked apart from the config's keys)
DATA_KEY = "data.sha256"


def _add(h: Any, a: Any) -> None:
    if a is None:
        h.update(b"none")
    elif sp.issparse(a):
        csr = sp.csr_matrix(a)
        h.update(f"csr{csr.shape}".encode())
        for part in (csr.data, csr.indices, csr.indptr):
            _add(h, part)
    else:
        arr = np.ascontiguousarray(a)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(memoryview(arr).cast("B"))


def local_digest(work: Any) -> str:
    """sha256 of the data this process holds of ``work`` (a Workload)."""
    h = hashlib.sha256()
    for p in getattr(work, "problems", []):
        if p is not None and hasattr(p, "A"):
            _add(h, p.A)
            _add(h, getattr(p, "b", None))
    data = getattr(work, "data", None)
    for name in ("X", "y", "X_test", "y_test"):
        if hasattr(data, name):
            _add(h, getattr(data, name))
    for part in getattr(work, "parts", []) or []:
        _add(h, part)
    return h.hexdigest()


def data_digest(work: Any, comm: Any = None) -> str:
    """Collective (over ``comm``; None: this process alone): the run's data hash."""
    mine = local_digest(work)
    if comm is None or comm.Get_size() == 1:
        return mine
    every = comm.allgather(mine)  # control path, once per run
    return hashlib.sha256("".join(every).encode()).hexdigest()
