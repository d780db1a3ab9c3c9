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

See docs/torch.md.
"""

from decomp.torch.data import DatasetRows, ShardSampler, dataset_labels, shard_indices
from decomp.torch.flat import FlatModel, Slot, is_buffer
from decomp.torch.problem import TorchProblem, evaluate_model, make_torch_problems


def __getattr__(name: str) -> object:
    """``DistributedOptimizer`` loads on first use (it imports the engine, which imports
    :mod:`decomp.torch.evaluation` lazily: no import cycle)."""
    if name == "DistributedOptimizer":
        from decomp.torch.optimizer import DistributedOptimizer

        return DistributedOptimizer
    raise AttributeError(f"module 'decomp.torch' has no attribute {name!r}")


__all__ = ["DatasetRows", "DistributedOptimizer", "FlatModel", "ShardSampler", "Slot",
           "TorchProblem", "dataset_labels", "evaluate_model", "is_buffer",
           "make_torch_problems", "shard_indices"]
