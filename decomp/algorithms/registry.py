"""The algorithm registry: config name -> class, family and options.

One line per method in :data:`REGISTRY`. Everything that needs to know the methods reads it:
config validation and the runner (:func:`build`), ``decomp sim`` (the reference of the same
name in :mod:`decomp.sim`), the SLURM templates, the docs and the tests. A method's options
are its class constructor's keyword parameters (beyond the common ``compressor``,
``batch_size`` and ``lr``), with the defaults written there: nothing repeats them.

Adding a method: its class file, its reference in :mod:`decomp.sim`, one line here, its docs
section (docs/algorithms.md) and its tests.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any

from decomp.algorithms.allreduce import DEFAULT_QSGD, AllreduceCompressed, AllreduceSGD
from decomp.algorithms.base import AlgorithmOptions, MasterWorkerAlgorithm
from decomp.algorithms.beer import BEER
from decomp.algorithms.choco import CHOCOSGD
from decomp.algorithms.dcd import DCDPSGD
from decomp.algorithms.decentralized_base import DecentralizedAlgorithm
from decomp.algorithms.deepsqueeze import DeepSqueeze
from decomp.algorithms.dense import GD
from decomp.algorithms.dpsgd import DPSGD
from decomp.algorithms.ecd import ECDPSGD
from decomp.algorithms.ef import DCGD, EF
from decomp.algorithms.ef21 import EF21, EF21Plus
from decomp.algorithms.ef21_bc import EF21BC
from decomp.algorithms.ef21_pp import EF21PP
from decomp.algorithms.ef21_sgdm import EF21SGDM
from decomp.algorithms.powergossip import PowerGossip
from decomp.algorithms.powersgd import PowerSGD
from decomp.algorithms.sgdm import SGDM
from decomp.compress import make_compressor
from decomp.errors import ConfigError

MASTER_WORKER_FAMILY = "master_worker"
DECENTRALIZED_FAMILY = "decentralized"
FAMILIES = (MASTER_WORKER_FAMILY, DECENTRALIZED_FAMILY)
#: constructor keywords every algorithm takes (not per-method options)
COMMON = ("compressor", "batch_size", "lr")


@dataclass(frozen=True)
class AlgorithmSpec:
    """One registered method.

    name: its config name (``[[methods]] algorithm``); cls: the class; needs_batch: the method
    is stochastic by definition (``batch_size`` τ required); default_compressor: the
    compressor spec used when the config gives none (None: Identity); summary: one line for
    ``decomp info`` and the docs index.
    """

    name: str
    cls: type[AlgorithmOptions]
    summary: str
    needs_batch: bool = False
    default_compressor: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def family(self) -> str:
        """``"master_worker"`` or ``"decentralized"``."""
        return family_of_class(self.cls)

    @property
    def uses_compressor(self) -> bool:
        return bool(getattr(self.cls, "uses_compressor", True))

    @property
    def options(self) -> dict[str, Any]:
        """{option: default} from the constructor signature (``inspect.Parameter.empty`` for
        an option without a default)."""
        sig = inspect.signature(self.cls.__init__)
        return {p.name: p.default for p in sig.parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in COMMON}

    def resolve_options(self, given: dict[str, Any], label: str) -> dict[str, Any]:
        """The full option set: defaults from the class, overridden by ``given`` (unknown
        keys refused with the closest valid one)."""
        known = self.options
        for key in given:
            if key in known:
                continue
            new = self.cls.renamed.get(key)
            if new is not None:
                raise ConfigError(f"{label}: option '{key}' of {self.name} is now called "
                                  f"'{new}' (write {new} = {given[key]!r})")
            raise ConfigError(_unknown_option(self, key, label))
        return {**{k: v for k, v in known.items() if v is not inspect.Parameter.empty},
                **given}

    def build(self, *, compressor: Any = None, batch_size: int | None = None,
              lr: float | None = None, options: dict[str, Any] | None = None,
              label: str | None = None) -> Any:
        """A new algorithm object. compressor: a Compressor, a spec for
        :func:`decomp.compress.make_compressor` or None (the default of this method)."""
        label = label or self.name
        if self.needs_batch and batch_size is None:
            raise ConfigError(f"{label}: algorithm {self.name!r} needs batch_size (τ)")
        kwargs: dict[str, Any] = {"batch_size": batch_size, "lr": lr,
                                  **self.resolve_options(options or {}, label)}
        if compressor is None:
            compressor = self.default_compressor
        wire = getattr(self.cls, "wire_compressor", False) and compressor is not None
        kind = compressor if isinstance(compressor, str) else \
            compressor.get("kind") if isinstance(compressor, dict) else "identity"
        if wire and kind != "identity":
            raise ConfigError(f"{label}: algorithm {self.name!r} sends dense vectors and takes "
                              f"no compressor (got {kind!r}) but an identity with a 16-bit "
                              "value_dtype, its wire: compressor = { kind = \"identity\", "
                              "value_dtype = \"bfloat16\" } (or wire_dtype = \"bfloat16\")")
        if self.uses_compressor or wire:  # (a dense method's 16-bit wire: an identity)
            kwargs["compressor"] = (make_compressor(compressor)
                                    if isinstance(compressor, (str, dict)) else compressor)
        elif compressor is not None:
            raise ConfigError(f"{label}: algorithm {self.name!r} sends dense vectors and takes "
                              "no compressor")
        return self.cls(**kwargs)


def _unknown_option(spec: AlgorithmSpec, key: str, label: str) -> str:
    """The message for an option ``key`` that ``spec`` does not take: who takes it, or the
    closest valid key."""
    owners = [s.name for s in REGISTRY.values() if key in s.options]
    if owners:
        fams = {REGISTRY[o].family for o in owners}
        if spec.family not in fams:
            fam = next(iter(fams)).replace("_", "–")
            return (f"{label}: {key} applies to the {fam} family only ({', '.join(owners)}), "
                    f"not to {spec.name}")
        return f"{label}: {key} applies to {', '.join(owners)} only, not to {spec.name}"
    valid = [*COMMON, "name", "lr_multiplier", *spec.options]
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return (f"{label}: unknown option '{key}' for {spec.name}{hint} (its options: "
            f"{', '.join(spec.options) or 'none'}; every method: {', '.join(COMMON)}, "
            "lr_multiplier, name)")


def renamed_option(key: str) -> tuple[str, tuple[str, ...]] | None:
    """(new name, the methods that renamed it) for an old option name some class declares in
    ``renamed`` (e.g. CHOCO-SGD's and BEER's consensus step), else None."""
    owners = tuple(n for n, s in REGISTRY.items() if key in s.cls.renamed)
    if not owners:
        return None
    return REGISTRY[owners[0]].cls.renamed[key], owners


def family_of_class(cls: type) -> str:
    if issubclass(cls, MasterWorkerAlgorithm):
        return MASTER_WORKER_FAMILY
    if issubclass(cls, DecentralizedAlgorithm):
        return DECENTRALIZED_FAMILY
    raise ConfigError(f"{cls.__name__} is not a decomp algorithm (expected a decomp.algorithms "
                      "class with init/step: a MasterWorkerAlgorithm or a "
                      "DecentralizedAlgorithm)")


def family_of(algorithm: Any) -> str:
    """The family of an algorithm object (ConfigError for anything else)."""
    return family_of_class(type(algorithm))


_SPECS = (
    AlgorithmSpec("gd", GD, "full-gradient descent, dense all-reduce"),
    AlgorithmSpec("sgd", GD, "minibatch SGD, dense all-reduce", needs_batch=True),
    AlgorithmSpec("sgdm", SGDM, "minibatch SGD with (Nesterov) momentum", needs_batch=True),
    AlgorithmSpec("dcgd", DCGD, "distributed compressed GD (unbiased C, no feedback)"),
    AlgorithmSpec("ef", EF, "classic error feedback (Seide et al. 2014)"),
    AlgorithmSpec("ef21", EF21, "EF21 (Richtárik et al. 2021, Algorithm 1)"),
    AlgorithmSpec("ef21_sgd", EF21, "EF21 with minibatch gradients", needs_batch=True),
    AlgorithmSpec("ef21_plus", EF21Plus, "EF21+ (EF21 or DCGD step, whichever is closer)"),
    AlgorithmSpec("ef21_sgdm", EF21SGDM, "EF21 with momentum on minibatch gradients",
                  needs_batch=True),
    AlgorithmSpec("ef21_pp", EF21PP, "EF21-PP: partial participation (Fatkhullin et al. 2021)"),
    AlgorithmSpec("ef21_bc", EF21BC, "EF21-BC: bidirectional compression (Fatkhullin et al. "
                  "2021)"),
    AlgorithmSpec("powersgd", PowerSGD, "PowerSGD: rank-r power iteration per tensor, error "
                  "feedback, all-reduce (Vogels et al. 2019)"),
    AlgorithmSpec("dpsgd", DPSGD, "D-PSGD (Lian et al. 2017), dense gossip"),
    AlgorithmSpec("dcd_psgd", DCDPSGD, "DCD-PSGD: difference compression (Tang et al. 2018)"),
    AlgorithmSpec("ecd_psgd", ECDPSGD, "ECD-PSGD: extrapolation compression (Tang et al. 2018)"),
    AlgorithmSpec("choco_sgd", CHOCOSGD, "CHOCO-SGD (Koloskova et al. 2019)"),
    AlgorithmSpec("beer", BEER, "BEER: gradient tracking, compressed replicas (Zhao et al. 2022)"),
    AlgorithmSpec("deepsqueeze", DeepSqueeze, "DeepSqueeze: error-compensated compressed gossip "
                  "(Tang et al. 2019)"),
    AlgorithmSpec("powergossip", PowerGossip, "PowerGossip: rank-r power iteration on "
                  "neighbours' model differences, per edge (Vogels et al. 2020)"),
    AlgorithmSpec("allreduce_sgd", AllreduceSGD, "minibatch SGD, dense all-reduce (baseline)"),
    AlgorithmSpec("allreduce_qsgd", AllreduceCompressed, "all-reduce of compressed gradients",
                  default_compressor=DEFAULT_QSGD),
)

#: config name -> spec, in the order of the docs
REGISTRY: dict[str, AlgorithmSpec] = {s.name: s for s in _SPECS}


def get(name: str) -> AlgorithmSpec:
    """The spec of a config name (ConfigError naming the closest one and both families)."""
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown algorithm {name!r}{hint} (master–worker: "
                          f"{', '.join(names(MASTER_WORKER_FAMILY))}; decentralized: "
                          f"{', '.join(names(DECENTRALIZED_FAMILY))})") from None


def names(family: str | None = None) -> tuple[str, ...]:
    """Registered config names, of one family or all."""
    return tuple(n for n, s in REGISTRY.items() if family in (None, s.family))


def family(name: str) -> str:
    """``"master_worker"`` or ``"decentralized"`` for a config name."""
    return get(name).family
