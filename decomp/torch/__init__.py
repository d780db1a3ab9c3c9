"""Torch models on flat buffers (imports torch; ``import decomp`` alone does not).

- :class:`FlatModel`: a module's parameters and gradients as views into two contiguous float32
  numpy vectors (zero-copy), BatchNorm statistics in a third.
- :class:`TorchProblem`: that model, a loss and a worker's rows as a
  :class:`decomp.problems.Problem`, so every algorithm and :mod:`decomp.sim` run on it unchanged.
- :func:`make_torch_problems`: n workers' problems on copies of one module (the reference).
- :class:`DistributedOptimizer`: any torch optimizer and the user's own loop over a decomp
  algorithm of either family (:mod:`decomp.torch.optimizer`).
- :class:`ShardSampler`, :func:`shard_indices`, :class:`DatasetRows`: any torch ``Dataset``
  split over the ranks by decomp's partitions (:mod:`decomp.torch.data`); test metrics in
  :mod:`decomp.torch.metrics`.
- :func:`rank`, :func:`world_size`, :func:`barrier`, :func:`all_reduce`,
  :func:`distributed_sampler`: what a DDP loop takes from ``torch.distributed`` besides the
  optimizer, over MPI (:mod:`decomp.torch.compat`).

Under an MPI launcher with several ranks, importing this package installs
:func:`decomp.runner.lifecycle.abort_on_error`: an uncaught exception on one rank of a user's
script (even before any decomp object exists, e.g. while loading data) ends the whole job
instead of leaving the other ranks waiting in a collective.

See docs/torch.md.
"""

import os
from collections.abc import Mapping

from decomp.torch.compat import all_reduce, barrier, distributed_sampler, rank, world_size
from decomp.torch.data import DatasetRows, ShardSampler, dataset_labels, shard_indices
from decomp.torch.flat import FlatModel, Slot, is_buffer
from decomp.torch.problem import TorchProblem, evaluate_model, make_torch_problems


def launched_with_several_ranks(env: Mapping[str, str] = os.environ) -> bool:
    """Whether an MPI launcher started this process in a world of more than one rank, from
    the variables launchers set (MPICH/Intel ``PMI_SIZE``, Open MPI
    ``OMPI_COMM_WORLD_SIZE``, ``srun --mpi=pmix`` ``SLURM_STEP_NUM_TASKS``): no MPI call."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        if env.get(name, "").strip().isdigit():
            return int(env[name]) > 1
    tasks = env.get("SLURM_STEP_NUM_TASKS", "").strip()
    return "PMIX_RANK" in env and tasks.isdigit() and int(tasks) > 1


if launched_with_several_ranks():
    from decomp.runner.lifecycle import abort_on_error

    abort_on_error()


def __getattr__(name: str) -> object:
    """``DistributedOptimizer`` loads on first use (it imports the engine, which imports
    :mod:`decomp.torch.evaluation` lazily: no import cycle)."""
    if name == "DistributedOptimizer":
        from decomp.torch.optimizer import DistributedOptimizer

        return DistributedOptimizer
    if name == "MetricsWriter":
        from decomp.torch.metrics_writer import MetricsWriter

        return MetricsWriter
    raise AttributeError(f"module 'decomp.torch' has no attribute {name!r}")


__all__ = ["DatasetRows", "DistributedOptimizer", "FlatModel", "MetricsWriter", "ShardSampler",
           "Slot", "TorchProblem", "all_reduce", "barrier", "dataset_labels",
           "distributed_sampler", "evaluate_model", "is_buffer", "launched_with_several_ranks",
           "make_torch_problems", "rank", "shard_indices", "world_size"]
