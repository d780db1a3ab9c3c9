"""What a DDP loop expects besides ``step()``, for :class:`decomp.torch.DistributedOptimizer`.

- :func:`refuse_grad_scaler`: ``torch.amp.GradScaler`` is refused. The optimizer declares
  ``_step_supports_amp_scaling``, so an enabled scaler's ``scaler.step(opt)`` always calls
  ``opt.step()`` (torch then hands it ``found_inf``/``grad_scale`` instead of skipping the call
  on a rank that found an inf), and that call raises the same error on every rank before any
  collective: no rank is left waiting. bfloat16 autocast needs no scaler.
- :func:`clip_grad_norm_`: clips what is applied — the aggregated ĝ^t (master–worker, after
  ``synchronize()``; the same on every rank) or this node's gradient (decentralized: each node
  clips its own local step's input, per node).
- :func:`warn_sync_batchnorm`: ``nn.SyncBatchNorm`` without torch.distributed is plain
  BatchNorm per rank; decomp averages float buffers only under ``averaged()``.
- :func:`rank`, :func:`world_size`, :func:`barrier`, :func:`all_reduce`: the thin helpers
  a loop needs (logging on rank 0, averaging a metric), on ``MPI.COMM_WORLD`` by default, or
  on the communicator of the optimizer passed as ``comm``.
- :func:`distributed_sampler`: torch's ``DistributedSampler`` with ``num_replicas`` and
  ``rank`` from MPI (it reads them from a torch.distributed process group otherwise, which
  decomp does not create).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from decomp.errors import ConfigError

GRAD_SCALER = (
    "DistributedOptimizer does not support torch.amp.GradScaler: the scaler decides on each "
    "rank alone whether to skip a step (an inf/NaN in that rank's scaled gradient), and a rank "
    "that skips leaves the others waiting in the step's collective. Train with bfloat16 "
    "autocast, which needs no scaler (`with torch.autocast('cpu', dtype=torch.bfloat16):` "
    "around the forward; plain `loss.backward()` and `opt.step()`), or disable the scaler "
    "(GradScaler(enabled=False)). Refused in opt.step() on every rank, before any collective.")


def refuse_grad_scaler(opt: Any) -> None:
    """Raise :class:`ConfigError` if an enabled GradScaler called ``opt.step()`` (it set
    ``found_inf``, the contract of ``_step_supports_amp_scaling``): the same on every rank."""
    found = [vars(opt).pop(k) for k in ("found_inf", "grad_scale") if k in vars(opt)]
    if found:  # removed as torch would after its step: a later plain step() is not refused
        raise ConfigError(GRAD_SCALER)


def clip_grad_norm_(opt: Any, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
    """Clip the gradient ``opt.step()`` will apply to ``max_norm``; returns its norm before
    clipping (as ``torch.nn.utils.clip_grad_norm_``)."""
    if opt.optimizer is None:
        raise ConfigError("clip_grad_norm_ needs a wrapped torch optimizer: with "
                          "optimizer=None the algorithm applies its own update inside step()")
    if not opt.decentralized and not opt._synced:
        opt.synchronize()  # collective: p.grad now holds ĝ^t, the same on every rank
    params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
    return nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)


def warn_sync_batchnorm(model: nn.Module) -> None:
    """Warn once per model with ``nn.SyncBatchNorm`` layers (no torch.distributed here)."""
    n = sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    if n:
        warnings.warn(f"the model has {n} nn.SyncBatchNorm layer(s): without a "
                      "torch.distributed process group they normalise with this rank's batch "
                      "statistics, as plain BatchNorm; decomp averages the running statistics "
                      "only inside opt.averaged(). Use nn.BatchNorm (or convert back) to say "
                      "so", stacklevel=3)


def _comm(comm: Any) -> Any:
    """An MPI communicator: ``comm`` itself, a DistributedOptimizer's (``.comm``), or
    ``MPI.COMM_WORLD`` for None."""
    if comm is None:
        from mpi4py import MPI

        return MPI.COMM_WORLD
    return comm.comm if hasattr(comm, "comm") and hasattr(comm, "step") else comm


def rank(comm: Any = None) -> int:
    """This process's rank (``torch.distributed.get_rank()``)."""
    return int(_comm(comm).Get_rank())


def world_size(comm: Any = None) -> int:
    """The number of ranks (``torch.distributed.get_world_size()``)."""
    return int(_comm(comm).Get_size())


def barrier(comm: Any = None) -> None:
    """Collective: wait for every rank."""
    _comm(comm).Barrier()


def all_reduce(tensor: torch.Tensor, op: str = "mean", comm: Any = None) -> torch.Tensor:
    """Collective: ``tensor`` (any dtype and shape, CPU) reduced over the ranks in place and
    returned: ``op`` "sum", "mean", "max" or "min" (for metrics; not counted as traffic)."""
    if op not in ("sum", "mean", "max", "min"):
        raise ConfigError(f"all_reduce: op must be 'sum', 'mean', 'max' or 'min', got {op!r}")
    from mpi4py import MPI

    c = _comm(comm)
    wide = torch.float64 if tensor.is_floating_point() else torch.int64
    buf = tensor.detach().to(wide).contiguous().numpy().copy()
    mpi_op = {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]
    c.Allreduce(MPI.IN_PLACE, buf, op=mpi_op)
    if op == "mean":
        buf = buf / c.Get_size()
    with torch.no_grad():
        tensor.copy_(torch.from_numpy(np.asarray(buf)).to(tensor.dtype))
    return tensor


def distributed_sampler(dataset: Any, comm: Any = None, **options: Any) -> Any:
    """``torch.utils.data.DistributedSampler(dataset, num_replicas=world_size(comm),
    rank=rank(comm), **options)`` (``shuffle``, ``seed``, ``drop_last`` as torch's): an iid
    split, every rank the same number of indices (padded by repeating a few), so every rank
    takes the same number of steps. Call ``set_epoch(e)`` each epoch, as under DDP."""
    from torch.utils.data import DistributedSampler

    for key in ("num_replicas", "rank"):
        if key in options:
            raise ConfigError(f"distributed_sampler sets {key} from MPI; call "
                              f"torch.utils.data.DistributedSampler directly to choose it")
    c = _comm(comm)
    return DistributedSampler(dataset, num_replicas=int(c.Get_size()), rank=int(c.Get_rank()),
                              **options)


__all__ = ["GRAD_SCALER", "all_reduce", "barrier", "clip_grad_norm_", "distributed_sampler",
           "rank", "refuse_grad_scaler", "warn_sync_batchnorm", "world_size"]
