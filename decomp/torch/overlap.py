"""``overlap=True`` in ``DistributedOptimizer``, the Trainer and ``decomp run``: which buckets a
method gets — the dense all-reduce (:mod:`decomp.torch.buckets`) or per-bucket compression
(:mod:`decomp.torch.overlap_compressed`) — or a clear error naming why it cannot overlap."""

from __future__ import annotations

from typing import Any

import numpy as np

from decomp.errors import ConfigError
from decomp.torch.buckets import Buckets, cap_bytes, dense_methods
from decomp.torch.flat import FlatModel
from decomp.torch.overlap_compressed import attach_compressed


def attach(flat: FlatModel, session: Any, algorithm: Any, *, overlap: bool,
           bucket_cap_mb: float | None, pseudo: bool = False,
           problem: Any = None) -> Buckets | None:
    """The :class:`Buckets` of ``overlap=True`` (DistributedOptimizer, Trainer) installed on
    the session's transport, or None (``overlap=False``); a clear error for what it cannot
    overlap. pseudo: decentralized with a torch optimizer (the gradient is not sent);
    problem: the Trainer's :class:`~decomp.torch.TorchProblem` (None on a dedicated master)."""
    for p in flat.parameters():  # the model wrapped again: the earlier wrapper's hooks go
        old = getattr(p, "_decomp_buckets", None)
        if old is not None:
            old.close()
    if not overlap:
        if bucket_cap_mb is not None:
            raise ConfigError("bucket_cap_mb sizes the buckets of overlap=True: pass "
                              "overlap=True too (or drop bucket_cap_mb)")
        return None
    if overlap is not True:
        raise ConfigError(f"overlap must be True or False, got {overlap!r}")
    name = type(algorithm).__name__
    if pseudo:
        raise ConfigError(f"overlap=True sends gradient buckets during backward; {name}'s nodes "
                          "send their torch optimizer's update, not the gradient (a "
                          "decentralized exchange needs the model after the local step): drop "
                          "overlap=True, or use optimizer=None with AllreduceSGD")
    if getattr(session.transport, "mode", "shared") != "shared":
        raise ConfigError("overlap=True needs every rank to be a worker (master = 'shared'): "
                          "a dedicated master has no backward to post buckets from")
    if problem is not None and (problem.weight_decay or algorithm.batch_size is None):
        raise ConfigError("overlap=True sends the gradient one backward produces: give "
                          "the Trainer a batch_size (a full gradient is several backward "
                          "passes) and no weight_decay (added after backward; put it in the "
                          "loss), or drop overlap=True")
    cap_bytes(flat.d, flat.grads.itemsize, bucket_cap_mb)  # the value check first
    if not isinstance(algorithm, dense_methods()):
        b = attach_compressed(flat, session, algorithm, bucket_cap_mb)
    else:
        b = Buckets(flat, session.transport.comm, bucket_cap_mb)
        b.install(session.transport)
    if problem is not None:
        _only_in_steps(b, problem)
    return b


def _only_in_steps(b: Buckets, problem: Any) -> None:
    """The Trainer / ``decomp run``: the hooks send only during the step's minibatch gradient
    (``problem.minibatch_grad``), not during a full gradient (an init, a metric's ‖∇f‖²)."""
    b.active = False
    inner = problem.minibatch_grad

    def minibatch_grad(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        b.active = True
        try:
            return inner(x, rows)
        finally:
            b.active = False

    problem.minibatch_grad = minibatch_grad


__all__ = ["attach"]
