"""Single-process vectorized references of every algorithm (the test oracle), built from the
algorithm object.

:func:`reference` runs an algorithm object's reference: the function its class declares as
``reference = "module:function"`` (resolved here, lazily, so :mod:`decomp.algorithms` never
imports this package), fed with the object's hyper-parameters (compressor C, τ, options) — as
an equivalence test pairs an object with its reference, nothing is written twice.
:func:`simulate` is the same by config name (through the registry). Master–worker references
return a :class:`Trace` (x (T+1, d)), decentralized ones a :class:`DecentralizedTrace`
(X ∈ R^{n×d} per step, row i = node i; products with the mixing matrix W).

Written straight from the papers' equations on n x d arrays (row i = worker i), using each
compressor's plain-numpy ``reference`` formula and the same (seed, worker, step, purpose)
randomness as the MPI runtime, so a multi-rank run must match it iterate for iterate.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from decomp.comm.tree import check_aggregation
from decomp.compress import Compressor, Identity, bind_attributes, bind_layout
from decomp.errors import ConfigError
from decomp.layout import Layout, layout_of
from decomp.problems import Problem
from decomp.sim._common import Trace
from decomp.sim.decentralized import DecentralizedTrace


def reference_of(alg: Any) -> Callable[..., Any]:
    """The reference function an algorithm object's class declares (``reference``,
    ``"module:function"``); ConfigError for anything else."""
    from decomp.algorithms.registry import family_of

    family_of(alg)  # "not a decomp algorithm" for anything else
    cls = type(alg)
    path = getattr(cls, "reference", None)
    if not isinstance(path, str) or ":" not in path:
        raise ConfigError(f"{cls.__name__} declares no reference in decomp.sim (a class "
                          "attribute reference = 'decomp.sim.<module>:<function>')")
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{cls.__name__}.reference = {path!r} does not name a function "
                          f"({e})") from None


def reference(alg: Any, problems: Sequence[Problem], x0: np.ndarray, W: Any = None, *,
              lr: float, steps: int, seed: int = 0, compressor: Compressor | None = None,
              X0: np.ndarray | None = None, layout: Layout | None = None,
              aggregation: str = "gather") -> Trace | DecentralizedTrace:
    """Run the reference of the algorithm object ``alg`` for ``steps`` iterations on
    n = len(problems) workers (nodes) from x0 (d,), with step size γ = lr and the run's seed.

    Hyper-parameters come from ``alg``: its compressor C, ``batch_size`` τ and options
    (``consensus_step``, ``init``, ...). W: the mixing matrix (a MixingMatrix, an (n, n)
    array or a schedule W_t) of a decentralized method, None for a master–worker one. X0:
    optional (n, d) per-node start (decentralized). compressor: apply this one instead of
    ``alg.compressor`` (a wrapper of it, e.g. ``decomp sim``'s byte recorder); ignored by a
    method that sends dense vectors. layout: the model's tensors (None: one slot of x0's
    length), to which per-tensor compressors (``alg``'s, and ``compressor``) are bound, as
    ``Env.codec`` and the runner do; ``alg`` itself is not modified. aggregation: the run's
    ``run.aggregation`` ("gather" | "tree"; master–worker family): the order of the sums
    over workers and the bytes counted, as the method runs with it
    (``alg.aggregation_for(aggregation)``: a method that needs the master gathers).
    """
    from decomp.algorithms.registry import DECENTRALIZED_FAMILY, family_of

    fn = reference_of(alg)
    try:
        model = layout_of(x0.size, layout)
    except ValueError as e:
        raise ConfigError(f"decomp.sim: {e}") from None
    alg = bind_attributes(alg, model)
    compressor = bind_layout(compressor, model)
    if not getattr(alg, "uses_compressor", True):
        C: Compressor = Identity()
    else:
        C = compressor if compressor is not None else alg.compressor
        alg.check(x0.size)
    # a reference that reads the model's tensors (low-rank methods) declares ``layout``
    extra = {"layout": model} if "layout" in inspect.signature(fn).parameters else {}
    if family_of(alg) == DECENTRALIZED_FAMILY:
        if W is None:
            raise ConfigError(f"the reference of {alg.name} (decentralized) needs the mixing "
                              "matrix W (a MixingMatrix, an (n, n) array or a schedule)")
        return fn(alg, problems, x0, W, lr=lr, steps=steps, seed=seed, C=C, X0=X0, **extra)
    if W is not None or X0 is not None:
        raise ConfigError(f"{alg.name} is a master–worker method: its reference takes no "
                          "mixing matrix W and no per-node start X0")
    if "aggregation" in inspect.signature(fn).parameters:  # sums a tree regroups
        from decomp.comm.nodes import count_env
        from decomp.comm.tree import resolve_aggregation

        agg = resolve_aggregation("shared", check_aggregation(aggregation),
                                  count_env(len(problems)))
        extra["aggregation"] = alg.aggregation_for(agg)
    return fn(alg, problems, x0, lr=lr, steps=steps, seed=seed, C=C, **extra)


def simulate(algorithm: str, problems: Sequence[Problem], x0: np.ndarray, W: Any = None, *,
             lr: float, steps: int, seed: int = 0, compressor: Any = None,
             batch_size: int | None = None, X0: np.ndarray | None = None,
             layout: Layout | None = None, aggregation: str = "gather",
             **options: Any) -> Trace | DecentralizedTrace:
    """:func:`reference` of the registered method ``algorithm`` (a config name), built by the
    registry as ``decomp run`` builds it: compressor (a Compressor or a spec; None: the
    method's default), ``batch_size`` τ and its options (unknown ones refused, naming the
    valid or renamed key); ``layout`` and ``aggregation`` as for :func:`reference`."""
    from decomp.algorithms.registry import get

    alg = get(algorithm).build(compressor=compressor, batch_size=batch_size, options=options,
                               label=f"decomp.sim {algorithm!r}")
    return reference(alg, problems, x0, W, lr=lr, steps=steps, seed=seed, X0=X0, layout=layout,
                     aggregation=aggregation)


#: the decentralized spelling of :func:`simulate` (W the fourth argument)
simulate_decentralized = simulate


__all__ = ["DecentralizedTrace", "Trace", "reference", "reference_of", "simulate",
           "simulate_decentralized"]
