"""Pieces shared by the master–worker references (:mod:`decomp.sim.masterworker`,
:mod:`decomp.sim.ef21_sgdm`, :mod:`decomp.sim.sgdm`): the result type and the row-wise oracle
and compressor calls on n x d arrays (row i = worker i)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from decomp.algorithms.env import stream_key
from decomp.compress import Compressor
from decomp.problems import Problem, oracle_grad


@dataclass
class Trace:
    """xs: (T+1, d) iterates x^0..x^T; bytes_up: (n,) payload bytes each worker sent;
    state: final named arrays (e.g. G = all g_i, g, E = all e_i)."""

    xs: np.ndarray
    bytes_up: np.ndarray
    state: dict[str, np.ndarray] = field(default_factory=dict)


def _grads(problems: Sequence[Problem], x: np.ndarray, seed: int, step: int,
           batch_size: int | None) -> np.ndarray:
    """(n, d): row i = ∇f_i(x) (or its minibatch estimate at ``step``)."""
    return np.stack([oracle_grad(p, x, seed=seed, worker=i, step=step, batch_size=batch_size)
                     for i, p in enumerate(problems)])


def _compress(C: Compressor, M: np.ndarray, seed: int, step: int, stream: int = 0) -> np.ndarray:
    """(n, d): row i = C(M[i]) with worker i's key on ``stream`` (the runtime's allocator,
    :func:`decomp.algorithms.env.stream_key`)."""
    n = M.shape[0]
    return np.stack([C.reference(M[i], stream_key(seed, i, n, step, stream)) for i in range(n)])
