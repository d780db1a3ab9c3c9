"""The algorithm contract: what the runner, the torch front ends and the tests may call.

Both families' base classes (:class:`~decomp.algorithms.base.MasterWorkerAlgorithm`,
:class:`~decomp.algorithms.decentralized_base.DecentralizedAlgorithm`) implement
:class:`Algorithm`; every class of :data:`decomp.algorithms.registry.REGISTRY` does (a unit test
checks it). An algorithm object holds hyper-parameters only and is pure: ``init`` and ``step``
never write to it (temporaries live in ``env.workspace``), so one object can drive any number
of runs.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from decomp.algorithms.env import Env
from decomp.compress import Compressor

__all__ = ["Algorithm"]


@runtime_checkable
class Algorithm(Protocol):
    """One method: ``name`` (its registry / config name), ``uses_compressor``, the
    hyper-parameters every method takes (``compressor`` C, ``batch_size`` τ or None, ``lr``
    a default γ or None) and the four calls below."""

    name: ClassVar[str]
    uses_compressor: ClassVar[bool]
    compressor: Compressor
    batch_size: int | None
    lr: float | None

    def check(self, d: int) -> None:
        """Refuse (ConfigError naming the fix) a compressor that cannot compress length-d
        vectors or that the method's analysis does not cover."""
        ...

    def init(self, env: Env, x0: np.ndarray) -> Any:
        """The state at t = 0 from x^0 ((d,), the same on every rank; not modified)."""
        ...

    def step(self, env: Env, state: Any) -> Any:
        """One timed iteration (``env.watch``): the state at t + 1 (arrays updated in place)."""
        ...

    def model(self, state: Any) -> np.ndarray:
        """The (d,) point this rank evaluates (x^t, or node i's own x_i)."""
        ...
