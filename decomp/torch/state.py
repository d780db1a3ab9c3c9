"""Checkpoint helpers of :class:`decomp.torch.DistributedOptimizer`: the
:meth:`decomp.runner.Session.state_dict` as torch tensors (so ``torch.load`` with its default
``weights_only=True`` reads it) and the checks a load makes before touching anything."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from decomp.errors import ConfigError


def to_torch(d: dict[str, Any]) -> dict[str, Any]:
    """A Session state dict with every numpy array (the algorithm state's arrays) as a CPU
    tensor sharing its memory (the arrays are the Session's copies already)."""
    out = dict(d)
    out["state"] = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                    for k, v in d["state"].items()}
    return out


def from_torch(d: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`to_torch` (tensors back to numpy arrays)."""
    out = dict(d)
    out["state"] = {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v
                    for k, v in d["state"].items()}
    return out


def check_meta(meta: dict[str, Any], **expected: Any) -> None:
    """Refuse a state saved by another configuration, naming the first difference
    (algorithm, mode: own update or torch optimizer, rank, world size or model size d)."""
    for key, want in expected.items():
        got = meta.get(key)
        if got != want:
            what = {"rank": "rank", "world": "world size", "d": "model size d",
                    "algorithm": "algorithm", "mode": "mode"}[key]
            hint = (" (decomp state is per rank: save and load one file per rank)"
                    if key == "rank" else "")
            raise ConfigError(f"DistributedOptimizer.load_state_dict: the state was saved with "
                              f"{what} {got!r}, this optimizer has {want!r}{hint}")


__all__ = ["check_meta", "from_torch", "to_torch"]
