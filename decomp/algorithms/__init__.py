"""Algorithms, rank-local with explicit state: ``init(env, x0) -> state``, ``step(env, state)``.

Master–worker family (:data:`MASTER_WORKER`): GD (dense all-reduce), DCGD, classic EF, EF21
(+ EF21-SGD via ``batch_size``), EF21+, EF21-SGDM (extension) and dense SGD with momentum.

Decentralized family (:data:`DECENTRALIZED`, every rank a node of W with its own x_i):
D-PSGD, DCD-PSGD, ECD-PSGD, CHOCO-SGD, and the all-reduce baselines (dense SGD, QSGD).
:data:`REGISTRY` (:mod:`decomp.algorithms.registry`) maps every config name to its class,
family and options; :func:`family` tells a config name's family, :func:`family_of` an object's.
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


__all__ = ["AlgorithmSpec", "AllreduceCompressed", "AllreduceSGD", "AllreduceState", "CHOCOSGD",
           "CHOCOState", "DCDPSGD", "DCDState", "DCGD", "DCGDState", "DECENTRALIZED", "DPSGD",
           "DPSGDState", "DecentralizedAlgorithm", "ECDPSGD", "ECDState", "EF", "EF21",
           "EF21Plus", "EF21PlusState", "EF21SGDM", "EF21SGDMState", "EF21State", "EFState",
           "Env", "FAMILIES", "GD", "GDState", "MASTER_WORKER", "MasterWorkerAlgorithm",
           "NEEDS_BATCH", "REGISTRY", "SGDM", "SGDMState", "Stopwatch", "Stream", "check_finite",
           "check_lr", "family", "family_of", "names"]
