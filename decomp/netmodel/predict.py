"""Per-step time and time to target.

    step = max(compute, Σ overlapped comm) + Σ other comm + compress
    comm of a call = hops · α + bytes on the busiest link / β          (:mod:`.patterns`)
    compress = Σ codec calls on the critical path, each c0 + c1·m       (:mod:`.calibrate`)
    time to target = steps to target × step                            (:mod:`.steps`)

Only D-PSGD overlaps (its exchange of x_i^t is posted before the gradient and waited for
after it); every other call is blocking. The step is that of the slowest rank: the master for
the master–worker family (its own worker's work, then the decode of every payload).

:func:`predict_step_time` is the programmatic entry (one method, or every method of a config);
:func:`predict_config` builds the rows ``decomp model`` prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from decomp.algorithms import registry
from decomp.errors import ConfigError
from decomp.layout import Layout
from decomp.netmodel.calibrate import CodecCosts, Link
from decomp.netmodel.patterns import (
    MethodSpec,
    call_time,
    codec_ops,
    hops,
    link_bytes,
    method_spec,
    step_pattern,
)
from decomp.netmodel.spectral import canonical_topology, check_ranks, degree, mixing_rho
from decomp.netmodel.steps import StepsReference, rule_for, scale_steps

__all__ = ["Prediction", "StepTime", "predict_config", "predict_step_time", "reference_rho"]


@dataclass
class StepTime:
    """One method's predicted step, seconds; link_bytes: bytes serialised on the busiest link
    per step; calls: per call (call, bytes per message, fan, ranks, hops, link bytes, seconds,
    overlap, what)."""

    method: str
    algorithm: str
    n: int
    topology: str
    degree: int
    compute_s: float
    compress_s: float
    comm_s: float
    step_s: float
    link_bytes: float
    calls: list[dict[str, Any]] = field(default_factory=list)


ComputeArg = float | Callable[[MethodSpec, int], float]


def _compute(compute_s: ComputeArg, spec: MethodSpec, n: int) -> float:
    return float(compute_s(spec, n) if callable(compute_s) else compute_s)


def _one(method: Any, d: int, n: int, topology: str, alpha: float, beta: float,
         compute_s: ComputeArg, *, dtype: Any, master: str, allreduce: str, hops_mode: str,
         costs: CodecCosts | None, aggregation: str = "gather",
         ranks_per_node: int = 1) -> StepTime:
    from decomp.comm.tree import resolve_aggregation

    spec = method_spec(method)
    topo = canonical_topology(topology)
    # "auto": the tree when the n ranks span more than one node of ranks_per_node
    aggregation = resolve_aggregation(master, aggregation, -(-n // max(1, ranks_per_node)))
    check_ranks(topo, n)
    k = degree(topo, n) if spec.family == registry.DECENTRALIZED_FAMILY else 0
    calls = step_pattern(spec, d, n, k, master=master, dtype=dtype, aggregation=aggregation,
                         ranks_per_node=ranks_per_node)
    rows, overlapped, blocking, total_bytes = [], 0.0, 0.0, 0.0
    for c in calls:
        t = call_time(c, alpha, beta, allreduce, hops_mode)
        lb = link_bytes(c, allreduce)
        total_bytes += lb
        if c.overlap:
            overlapped += t
        else:
            blocking += t
        rows.append({"call": c.call, "bytes": c.nbytes, "fan": c.fan, "ranks": c.n,
                     "hops": hops(c, allreduce, hops_mode), "link_bytes": lb, "seconds": t,
                     "overlap": c.overlap, "what": c.what})
    compress = 0.0
    if costs is not None:
        for op in codec_ops(spec, n, k, master=master, aggregation=aggregation, d=d,
                            ranks_per_node=ranks_per_node):
            compress += op.count * costs.seconds(op.op, op.compressor, d, dtype)
    comp = _compute(compute_s, spec, n)
    step = max(comp, overlapped) + blocking + compress
    return StepTime(spec.label, spec.algorithm, n, topo, k, comp, compress,
                    overlapped + blocking, step, total_bytes, rows)


def predict_step_time(method: Any, d: int, n: int, topology: str = "ring",
                      alpha: float = 1e-3, beta: float = 125e6, compute_s: ComputeArg = 0.0,
                      *, dtype: Any = np.float64, master: str = "shared",
                      allreduce: str = "rabenseifner", hops: str = "algorithm",
                      costs: CodecCosts | None = None,
                      aggregation: str = "gather",
                      ranks_per_node: int = 1) -> StepTime | dict[str, StepTime]:
    """Predicted seconds of one step.

    method: a registry name (a key of ``decomp.algorithms.REGISTRY``), a ``[[methods]]``-like
        dict (``{"algorithm": <name>, "compressor": {"kind": "topk", "ratio": 0.1}}``), a
        :class:`decomp.config.MethodConfig`, a :class:`MethodSpec` — or a whole
        :class:`decomp.config.Config`, then a dict {method label: StepTime} (its ``run.master``
        and ``problem.dtype`` are used).
    d: model length; n: workers (nodes); topology: ring | torus | exponential | complete (the
    degree of the decentralized family's exchanges; master–worker methods ignore it);
    alpha: seconds per message hop; beta: bytes/s per link; compute_s: seconds of the local
    computation per step (a number, or ``f(spec, n)``); dtype: the model's; master: shared |
    dedicated; allreduce: rabenseifner | ring | recursive-doubling; hops: ``algorithm`` (the
    MPI algorithms' hop counts) or ``emulated`` (:func:`decomp.comm.delay.rounds`, what
    ``[network] delay_ms`` adds); costs: codec costs (None: no compression time counted —
    pass ``CodecCosts.load()`` for this machine's); aggregation: gather | tree, the
    master–worker family's sum (a Config: its resolved ``run.aggregation``);
    ranks_per_node: the tree's node-aware split (nodes of that many ranks; 1: flat, the
    network links every rank).
    """
    from decomp.comm.tree import resolve_aggregation
    from decomp.config import Config

    kw = dict(dtype=dtype, master=master, allreduce=allreduce, hops_mode=hops, costs=costs,
              aggregation=aggregation, ranks_per_node=ranks_per_node)
    if isinstance(method, Config):
        kw["master"] = method.run.master
        kw["aggregation"] = resolve_aggregation(method.run.master, method.run.aggregation)
        kw["dtype"] = np.dtype(method.problem.dtype or "float64")
        return {m.label: _one(m, d, n, topology, alpha, beta, compute_s, **kw)  # type: ignore[arg-type]
                for m in method.methods}
    return _one(method, d, n, topology, alpha, beta, compute_s, **kw)  # type: ignore[arg-type]


@dataclass
class Prediction:
    """A row of ``decomp model``: the step and the time to target (seconds; steps None when
    the target is never reached in the reference)."""

    step: StepTime
    spectral_gap: float
    steps: float | None
    steps_source: str
    time_s: float | None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("step"))
        return out


def reference_rho(cfg: Any, n_ref: int) -> float:
    """ρ of the config's own W at n_ref nodes (FFT for the four circulant kinds, else the
    dense spectrum of :mod:`decomp.topologies`)."""
    t = cfg.topology
    if t.schedule:
        raise ConfigError("the cost model covers static topologies; this config has the "
                          f"time-varying schedule {t.schedule!r}")
    try:
        return mixing_rho(canonical_topology(t.kind), n_ref, t.weights) if not t.options \
            else _dense_rho(t, n_ref)
    except ConfigError:
        return _dense_rho(t, n_ref)


def _dense_rho(t: Any, n: int) -> float:
    from decomp.topologies import mixing_matrix

    return float(mixing_matrix(t.kind, n, t.weights, **t.options).rho)


def predict_config(cfg: Any, ranks: Sequence[int], topologies: Sequence[str], link: Link, *,
                   d: int, compute_s: ComputeArg, costs: CodecCosts | None,
                   reference: StepsReference | None, allreduce: str = "rabenseifner",
                   hops: str = "algorithm", transient: str = "measured",
                   layout: Layout | None = None,
                   aggregation: str | None = None,
                   ranks_per_node: int = 1) -> list[Prediction]:
    """Every method of ``cfg`` at every (topology, n): step time, steps to target (scaled
    from ``reference`` by :func:`decomp.netmodel.steps.scale_steps`; without one, the
    config's ``run.steps``) and time to target.

    transient: ``measured`` — the gossip methods' topology-free part is the count of the
    config's baseline method (the dense all-reduce: its class's ``steps_scaling.baseline``)
    and only the excess over it scales (no excess measured: no scaling); ``bound`` — the
    upper bound S_ref · max(1, q_ref/q) over every split of S_ref
    (:func:`decomp.netmodel.steps.scale_steps`). layout: the model's tensors (the workload's;
    None: one slot of d), which per-tensor compressors and low-rank methods are priced on.
    aggregation: gather | tree (None: the config's, :func:`decomp.comm.tree.
    resolve_aggregation`); ranks_per_node: the tree's node-aware split (1: flat)."""
    from decomp.comm.tree import resolve_aggregation

    aggregation = resolve_aggregation(cfg.run.master, aggregation if aggregation is not None
                                      else cfg.run.aggregation)
    if transient not in ("measured", "bound"):
        raise ConfigError(f"transient must be 'measured' or 'bound', got {transient!r}")
    dtype = np.dtype(cfg.problem.dtype or "float64")
    specs = [method_spec(m, layout) for m in cfg.methods]
    needs_w = any(rule_for(s.algorithm).measure != "none" for s in specs)
    rho_ref = reference_rho(cfg, reference.n_ref) if reference is not None and needs_w \
        else float("nan")
    base = None
    if reference is not None and transient == "measured":
        for s in specs:
            if rule_for(s.algorithm).baseline and reference.steps.get(s.label) is not None:
                base = reference.steps[s.label]
                break
    out = []
    for topo in topologies:
        for n in ranks:
            check_ranks(topo, n)
            rho = mixing_rho(topo, n, cfg.topology.weights)
            for s in specs:
                st = _one(s, d, n, topo, link.alpha_s, link.beta_Bps, compute_s, dtype=dtype,
                          master=cfg.run.master, allreduce=allreduce, hops_mode=hops,
                          costs=costs, aggregation=aggregation,
                          ranks_per_node=ranks_per_node)
                steps: float | None
                if reference is None:
                    steps, src = float(cfg.run.steps), "run.steps (no target)"
                elif reference.steps.get(s.label) is None:
                    steps, src = None, f"target not reached at n={reference.n_ref}"
                else:
                    s_ref = float(reference.steps[s.label])  # type: ignore[arg-type]
                    steps, how = scale_steps(s.algorithm, s_ref, rho_ref, rho, base,
                                             bound=transient == "bound")
                    src = f"{how} from {s_ref:g} at n={reference.n_ref}"
                time_s = None if steps is None else steps * st.step_s
                out.append(Prediction(st, 1.0 - rho, steps, src, time_s))
    return out
