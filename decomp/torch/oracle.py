"""How :class:`decomp.torch.DistributedOptimizer` drives an algorithm from a user's own loop.

The user's ``loss.backward()`` has already computed this rank's gradient ∇f_i(x^t; ξ) (the
minibatch is the user's) into the flat gradient buffer of a
:class:`~decomp.torch.flat.FlatModel`. :class:`GradientOracle` is the
:class:`~decomp.problems.Problem` the algorithm sees: its ``grad(x)`` returns that vector, so
the algorithm's own ``init``/``step`` code does the compression and the communication
unchanged. :func:`driver_kind` says how a given algorithm is driven — its class declares it
(``torch_driver``, and ``torch_refusal()`` for an object it cannot drive; see docs/torch.md,
"What the wrapped optimizer sees"):

``"estimator"`` — EF21, EF21-SGD, EF21-SGDM (master–worker, step = descend, then a gradient at
    the new point): the algorithm runs with γ = 0 on the model x, so its descend is the
    identity and its step only updates the estimator; the first ``step()`` is the algorithm's
    ``init`` (g_i^0 from the first gradient). The wrapped optimizer sees g^t (``state.g``).
``"update"`` — GD/SGD, SGDM, DCGD, EF (master–worker, step = gradient at x^t, then x^{t+1}):
    with a torch optimizer the algorithm runs with γ = 1 on a *probe* vector p = 0, so after
    its step p = −ĝ, the update it would apply; the wrapped optimizer sees ĝ = −p. Without one
    (``optimizer=None``) it runs on the model itself with its own γ: the existing method.
``"gossip"`` — every decentralized algorithm (step = gradient at x_i^t, then mixing): with a
    torch optimizer, its local step Δ_i = x_i' − x_i replaces −γ∇F_i(x_i^t; ξ), i.e. the
    algorithm runs with γ = 1 on the pseudo-gradient x_i − x_i' from the model's pre-step
    value; without one, the existing method on the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from decomp.algorithms.base import MasterWorkerAlgorithm
from decomp.algorithms.decentralized_base import DecentralizedAlgorithm
from decomp.algorithms.registry import REGISTRY, family_of_class
from decomp.errors import ConfigError
from decomp.problems import Problem

#: the ways an algorithm is driven (module doc); each class declares its ``torch_driver``
KINDS = ("estimator", "update", "gossip")


class GradientOracle(Problem):
    """f_i as seen through the user's backward: ``grad(x)`` returns :attr:`vector`.

    vector: (d,) float32 — the FlatModel's gradient buffer (master–worker, and the
    decentralized family without a torch optimizer) or the pseudo-gradient x_i − x_i' of the
    wrapped optimizer's local step (decentralized, with one). The point x the algorithm asks
    about is ignored: the user computed the gradient at the model's current parameters, which
    is the point every supported algorithm asks about (see :func:`driver_kind`). Returned
    without a copy; algorithms may write into it (GD all-reduces it in place).
    """

    def __init__(self, vector: np.ndarray) -> None:  # no Problem.__init__: no rows here
        self.vector = vector
        self.dtype = np.dtype(vector.dtype)

    @property
    def d(self) -> int:
        return int(self.vector.size)

    @property
    def n_samples(self) -> int:
        return 1

    def grad(self, x: np.ndarray) -> np.ndarray:
        """The user's gradient (or pseudo-gradient), (d,) float32."""
        return self.vector

    def minibatch_grad(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Never reached (the optimizer refuses algorithms with a ``batch_size``)."""
        raise ConfigError("DistributedOptimizer: the minibatch is the user's; the algorithm "
                          "must not draw its own (leave batch_size unset)")

    def _grad_rows(self, x: np.ndarray, A: Any, b: Any) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def loss(self, x: np.ndarray) -> float:
        """Unknown here (the loss is the user's): NaN."""
        return float("nan")

    def smoothness(self) -> float:
        raise ConfigError("DistributedOptimizer: a user's model has no known smoothness "
                          "constant; give the algorithm (or the torch optimizer) an lr")

    def __repr__(self) -> str:
        return f"GradientOracle(d={self.d})"


def driver_kind(algorithm: Any) -> str:
    """"estimator", "update" or "gossip" for a decomp algorithm object (module doc); a
    :class:`ConfigError` for an algorithm the optimizer cannot drive, naming why."""
    name = type(algorithm).__name__
    if getattr(algorithm, "batch_size", None) is not None:
        raise ConfigError(f"DistributedOptimizer: {name} has batch_size="
                          f"{algorithm.batch_size}, but with your own loop the minibatch is "
                          "yours (your DataLoader's batch size): build the algorithm without "
                          "batch_size")
    if getattr(algorithm, "init_batch", None) is not None:
        raise ConfigError(f"DistributedOptimizer: {name} has init_batch; its first estimate "
                          "comes from your first minibatch: leave init_batch unset")
    if not isinstance(algorithm, (MasterWorkerAlgorithm, DecentralizedAlgorithm)):
        raise ConfigError(f"DistributedOptimizer: {algorithm!r} is not a decomp algorithm "
                          "(decomp.algorithms: EF21, EF, GD, CHOCOSGD, ...)")
    refusal = algorithm.torch_refusal()
    if refusal:
        raise ConfigError(refusal)
    kind = type(algorithm).torch_driver
    if kind in KINDS:
        return kind
    raise ConfigError(f"DistributedOptimizer cannot drive {name} yet ({drivable()})")


def drivable() -> str:
    """The registered classes the optimizer drives, per family (for messages)."""
    by: dict[str, list[str]] = {}
    for spec in REGISTRY.values():
        if spec.cls.torch_driver in KINDS:
            names = by.setdefault(family_of_class(spec.cls), [])
            if spec.cls.__name__ not in names:
                names.append(spec.cls.__name__)
    return "; ".join(f"{fam.replace('_', '–')}: {', '.join(cls)}" for fam, cls in by.items())


__all__ = ["KINDS", "GradientOracle", "drivable", "driver_kind"]
