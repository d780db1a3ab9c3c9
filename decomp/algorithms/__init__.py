"""Algorithms, rank-local with explicit state: ``init(env, x0) -> state``, ``step(env, state)``.

Two families: master–worker (:data:`MASTER_WORKER`: workers send compressed messages to a
master, which aggregates) and decentralized (:data:`DECENTRALIZED`: every rank a node of a
mixing matrix W with its own x_i). The methods are those of :data:`REGISTRY`
(:mod:`decomp.algorithms.registry`, one line per method: config name -> class, family,
options), and nowhere else: ``decomp info`` prints them, docs/algorithms.md documents them
(a test checks its index against the registry), and every registered class is importable from
here by its class name. :func:`family` tells a config name's family, :func:`family_of` an
object's.
"""

from __future__ import annotations

from decomp.algorithms.allreduce import AllreduceCompressed, AllreduceSGD, AllreduceState
from decomp.algorithms.base import MasterWorkerAlgorithm, check_finite, check_lr
from decomp.algorithms.choco import CHOCOSGD, CHOCOState
from decomp.algorithms.dcd import DCDPSGD, DCDState
from decomp.algorithms.decentralized_base import DecentralizedAlgorithm, Stopwatch
from decomp.algorithms.dense import GD, GDState
from decomp.algorithms.dpsgd import DPSGD, DPSGDState
from decomp.algorithms.ecd import ECDPSGD, ECDState
from decomp.algorithms.ef import DCGD, EF, DCGDState, EFState
from decomp.algorithms.ef21 import EF21, EF21Plus, EF21PlusState, EF21State
from decomp.algorithms.ef21_sgdm import EF21SGDM, EF21SGDMState
from decomp.algorithms.env import Env, Stream
from decomp.algorithms.registry import (
    FAMILIES,
    REGISTRY,
    AlgorithmSpec,
    family,
    family_of,
    names,
)
from decomp.algorithms.sgdm import SGDM, SGDMState

#: config name -> class, per family (views of :data:`REGISTRY`)
MASTER_WORKER: dict[str, type[MasterWorkerAlgorithm]] = {
    n: REGISTRY[n].cls for n in names("master_worker")}  # type: ignore[misc]
DECENTRALIZED: dict[str, type[DecentralizedAlgorithm]] = {
    n: REGISTRY[n].cls for n in names("decentralized")}  # type: ignore[misc]
#: config names of methods that need a minibatch size τ (``batch_size``)
NEEDS_BATCH = tuple(n for n, s in REGISTRY.items() if s.needs_batch)
#: every registered class by its class name (all importable from this package)
CLASSES: dict[str, type] = {s.cls.__name__: s.cls for s in REGISTRY.values()}
globals().update(CLASSES)


__all__ = ["CLASSES", "AlgorithmSpec", "AllreduceCompressed", "AllreduceSGD", "AllreduceState",
           "CHOCOSGD", "CHOCOState", "DCDPSGD", "DCDState", "DCGD", "DCGDState", "DECENTRALIZED",
           "DPSGD", "DPSGDState", "DecentralizedAlgorithm", "ECDPSGD", "ECDState", "EF", "EF21",
           "EF21Plus", "EF21PlusState", "EF21SGDM", "EF21SGDMState", "EF21State", "EFState", "Env",
           "FAMILIES", "GD", "GDState", "MASTER_WORKER", "MasterWorkerAlgorithm", "NEEDS_BATCH",
           "Stream", "REGISTRY", "SGDM", "SGDMState", "Stopwatch", "check_finite", "check_lr",
           "family", "family_of", "names"]
__all__ += [c for c in CLASSES if c not in __all__]  # the registered classes not named above
