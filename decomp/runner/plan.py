"""Resolve a config once, at the top, into concrete parts: the methods (algorithm objects from
the registry), the world (how many workers), the mixing matrix W. Nothing below the engine
sees the :class:`~decomp.config.Config`.

Every check that does not need the data runs here, before any data is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from decomp.algorithms import registry
from decomp.algorithms.registry import DECENTRALIZED_FAMILY, AlgorithmSpec
from decomp.compress import bind_attributes
from decomp.config import Config, MethodConfig, TopologyConfig
from decomp.errors import ConfigError, LaunchError
from decomp.layout import Layout
from decomp.runner.build import check_family, check_tree
from decomp.runner.workload import loader_for
from decomp.theory import ef21_stepsize
from decomp.topologies import MixingMatrix, MixingSchedule, mixing_schedule, resolve_mixing


@dataclass
class MethodPlan:
    """One ``[[methods]]`` entry, resolved: its registry spec, a fresh algorithm object and
    the options it was built with (every constructor option, defaults included)."""

    config: MethodConfig
    spec: AlgorithmSpec
    algorithm: Any
    options: dict[str, Any]

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def decentralized(self) -> bool:
        return self.spec.family == DECENTRALIZED_FAMILY

    @property
    def compressor_name(self) -> str:
        alg = self.algorithm
        return repr(alg.compressor) if alg.uses_compressor else "-"


def plan_method(m: MethodConfig) -> MethodPlan:
    """The algorithm of a ``[[methods]]`` entry, built through the registry (unknown names,
    options of another algorithm and bad option values are ConfigErrors naming the method)."""
    spec = registry.get(m.algorithm)
    if spec.family == DECENTRALIZED_FAMILY and m.lr == "theory":
        raise ConfigError(f"{m.label}: {m.algorithm} needs an explicit lr: a number or '1/L' "
                          "(lr = 'theory' is EF21's step-size formula, which does not apply to "
                          "the decentralized family)")
    options = spec.resolve_options(m.options, m.label)
    try:
        alg = spec.build(compressor=m.compressor, batch_size=m.batch_size, options=m.options,
                         label=m.label)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(m.label) else f"{m.label}: {msg}") from None
    return MethodPlan(m, spec, alg, options)


def plan_methods(cfg: Config) -> list[MethodPlan]:
    """Every method of ``cfg`` built once (fail fast on a bad one), with the family/run
    combinations and what the problem kind refuses (a torch model has no L) checked. ``cfg``
    is not modified: each plan's ``options`` is the resolved set (class defaults included),
    and :func:`resolved_config` puts them into the config a run writes."""
    loader_for(cfg).check(cfg)
    plans = [plan_method(m) for m in cfg.methods]
    for p in plans:
        try:
            check_family(p.algorithm, master=cfg.run.master, who=p.config.algorithm,
                         key="run.master = ")
            check_tree(p.algorithm, cfg.run.aggregation, who=p.config.algorithm,
                       key="run.aggregation = ")
        except ConfigError as e:
            raise ConfigError(f"{p.label}: {e}") from None
    return plans


def resolved_config(cfg: Config, plans: list[MethodPlan]) -> Config:
    """A copy of ``cfg`` whose methods carry their resolved options (the class defaults
    included, None left out), so the ``config.toml`` a run writes says what ran."""
    methods = [dataclasses.replace(p.config, options={k: v for k, v in p.options.items()
                                                      if v is not None}) for p in plans]
    return dataclasses.replace(cfg, methods=methods)


def check_sizes(plans: list[MethodPlan], d: int, layout: Layout | None = None) -> None:
    """Check every method's compressor against the model size d (k > d, biased compressor for
    an algorithm that needs an unbiased one, ...) before the first method starts; with the
    model's ``layout``, per-tensor compressors are bound to it first (each plan then holds a
    copy of its algorithm with them bound)."""
    for p in plans:
        p.algorithm = bind_attributes(p.algorithm, layout)
        p.algorithm.check(d)


def resolve_lr(m: MethodConfig, alg: Any, L: float, Ls: list[float], d: int) -> float:
    """γ: explicit, ``"1/L"``, or (master–worker) the EF21 theory step (α of the algorithm's
    compressor), times the multiplier."""
    if isinstance(m.lr, str):
        if m.lr == "1/L":
            base = 1.0 / L
        elif m.lr != "theory":
            raise ConfigError(f"{m.label}: lr must be a number, 'theory' or '1/L', "
                              f"got {m.lr!r}")
        elif registry.family_of(alg) == DECENTRALIZED_FAMILY:
            raise ConfigError(f"{m.label}: lr = 'theory' does not apply to {m.algorithm}; give "
                              "a number or '1/L'")
        elif hasattr(alg, "theory_stepsize"):  # a method with its own theorem (EF21-PP)
            base = alg.theory_stepsize(L, Ls, d)
        else:
            base = ef21_stepsize(L, Ls, alg.alpha(d))
    else:
        if m.lr <= 0:
            raise ConfigError(f"{m.label}: lr must be positive, got {m.lr}")
        base = float(m.lr)
    return base * m.lr_multiplier


def workload_lr(m: MethodConfig, alg: Any, work: Any) -> float:
    """:func:`resolve_lr` on a workload: its L and L_i are read (and so computed) only when
    the step size is ``"1/L"`` or ``"theory"``; a numeric lr never needs them."""
    if isinstance(m.lr, str):
        return resolve_lr(m, alg, work.L, work.Ls, work.d)
    return resolve_lr(m, alg, float("nan"), [], work.d)


def build_mixing(t: TopologyConfig, n: int) -> MixingMatrix | MixingSchedule:
    """The validated W of ``[topology]`` for n nodes (TopologyError, a ConfigError, if bad),
    or, with ``schedule`` set, the validated time-varying schedule W_t (the transports and
    the reference take W_t at step t)."""
    from decomp.comm.neighborhood import EXCHANGE_METHODS

    if t.exchange not in EXCHANGE_METHODS:
        raise ConfigError(f"topology.exchange must be one of {EXCHANGE_METHODS}, "
                          f"got {t.exchange!r}")
    if t.schedule is not None:
        return mixing_schedule(t.schedule, n)
    return resolve_mixing(t.kind, n, t.weights, t.options)


def mixing_for(cfg: Config, plans: list[MethodPlan],
               n: int) -> MixingMatrix | MixingSchedule | None:
    """W (or the schedule W_t) when any method is decentralized, else None; a directed W is
    refused for a method whose analysis needs a symmetric one (``needs_symmetric_w``), a
    schedule for a method that cannot follow one (``refuses_schedule``)."""
    if not any(p.decentralized for p in plans):
        return None
    W = build_mixing(cfg.topology, n)
    for p in plans:
        if p.decentralized:
            try:
                p.algorithm.check_mixing(W)
            except ConfigError as e:
                msg = str(e)
                raise ConfigError(msg if msg.startswith(p.label) else f"{p.label}: {msg}") \
                    from None
    return W


def check_world(cfg: Config, comm: Any) -> int:
    """Number of workers this world gives, or a clear error if the config cannot use it."""
    size = comm.Get_size()
    n = size if cfg.run.master == "shared" else size - 1
    if cfg.run.master == "dedicated" and size < 2:
        raise LaunchError("run.master = 'dedicated' needs at least 2 MPI ranks")
    if cfg.run.workers is not None and cfg.run.workers != n:
        want = cfg.run.workers + (0 if cfg.run.master == "shared" else 1)
        raise LaunchError(f"config asks for run.workers = {cfg.run.workers} but the MPI world "
                          f"has {size} rank(s), i.e. {n} worker(s) with master = "
                          f"'{cfg.run.master}'; launch with mpiexec -n {want}")
    return n
