"""Evaluation metrics of torch models: ``metric(output, target)`` returns the metric *summed*
over the batch's rows, so sums pool across chunks and ranks and the reported value is
Σ / rows. The loss is always reported (``test_loss``); metrics add ``test_<name>``.

Built in (:data:`METRICS`): ``acc`` (argmax(output) == target: classification, integer
targets), ``mse`` and ``mae`` (per-row mean squared / absolute error over the output's entries:
regression). :func:`resolve_metrics` turns what a user passes (None, names, a dict of names or
callables) into {name: callable}; None is ``acc`` for classification and nothing otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from decomp.errors import ConfigError

Metric = Callable[[torch.Tensor, torch.Tensor], Any]


def accuracy(output: torch.Tensor, target: torch.Tensor) -> float:
    """Rows whose argmax over classes equals the label: output (B, K), target (B,) int."""
    return float((output.argmax(dim=1) == target).sum())


def _per_row(diff: torch.Tensor) -> torch.Tensor:
    return diff.reshape(diff.shape[0], -1).mean(dim=1) if diff.ndim > 1 else diff


def squared_error(output: torch.Tensor, target: torch.Tensor) -> float:
    """Σ_rows mean_j (output_j − target_j)² (target shaped like output, or (B,) for (B, 1))."""
    out = output.reshape(target.shape) if output.numel() == target.numel() else output
    return float(_per_row((out.float() - target.float()) ** 2).sum())


def absolute_error(output: torch.Tensor, target: torch.Tensor) -> float:
    """Σ_rows mean_j |output_j − target_j|."""
    out = output.reshape(target.shape) if output.numel() == target.numel() else output
    return float(_per_row((out.float() - target.float()).abs()).sum())


#: name -> metric (sum over the batch)
METRICS: dict[str, Metric] = {"acc": accuracy, "mse": squared_error, "mae": absolute_error}


def resolve_metrics(metrics: Any, classification: bool) -> dict[str, Metric]:
    """{name: metric} from None (``acc`` for classification, else none), an iterable of
    :data:`METRICS` names, or a mapping of names to callables (or to built-in names)."""
    if metrics is None:
        return {"acc": accuracy} if classification else {}
    if isinstance(metrics, str):
        metrics = [metrics]
    items = metrics.items() if isinstance(metrics, Mapping) else (
        (m, m) for m in metrics) if isinstance(metrics, Iterable) else None
    if items is None:
        raise ConfigError(f"metrics must be names or a dict of callables, got {metrics!r}")
    out: dict[str, Metric] = {}
    for name, fn in items:
        if isinstance(fn, str):
            if fn not in METRICS:
                raise ConfigError(f"unknown metric {fn!r} (built in: {', '.join(METRICS)}; or "
                                  "pass a callable(output, target) returning the batch sum)")
            fn = METRICS[fn]
        if not callable(fn) or name == "loss":
            raise ConfigError(f"metric {name!r}: expected a callable(output, target) (the "
                              "loss is always reported)")
        out[str(name)] = fn
    return out


__all__ = ["METRICS", "Metric", "absolute_error", "accuracy", "resolve_metrics",
           "squared_error"]
