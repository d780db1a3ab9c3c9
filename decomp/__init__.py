"""decomp: communication-compressed distributed training over MPI.

``import decomp`` is light: torch, mpi4py and the submodules load on first use, e.g.
``decomp.Trainer`` (imports torch) or ``decomp.algorithms.EF21``. ``decomp.datasets`` is
:mod:`decomp.data.classification` and ``decomp.models`` is :mod:`decomp.torch.models`.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = ("algorithms", "comm", "compress", "data", "problems", "runner", "sim", "torch",
               "topologies")
#: short names users know -> the module they stand for
_ALIASES = {"datasets": "decomp.data.classification", "models": "decomp.torch.models"}


def __getattr__(name: str) -> Any:
    if name == "Trainer":
        from decomp.torch.trainer import Trainer

        return Trainer
    if name in _SUBMODULES:
        return importlib.import_module(f"decomp.{name}")
    if name in _ALIASES:
        return importlib.import_module(_ALIASES[name])
    raise AttributeError(f"module 'decomp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "Trainer", *_SUBMODULES, *_ALIASES])
