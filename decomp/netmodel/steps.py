"""Steps to a target: measured at a small n, carried to other topologies and sizes.

The reference count S_ref comes from a ``decomp sim`` curve of the config at n_ref workers on
the config's topology (the first logged step with ‖∇f(x̄)‖² ≤ target), or is given
(``--steps-to-target``). Carrying it elsewhere (:func:`scale_steps`) follows the rule each
algorithm class declares (``steps_scaling``, a :class:`decomp.theory.StepsScaling`; a class
without one is refused):

* **master–worker and all-reduce methods** (gd, sgd, sgdm, dcgd, ef, the EF21 family,
  allreduce_sgd, allreduce_qsgd): every rank applies the same update of the mean gradient
  (estimate), so the count does not depend on a topology. It is kept at S_ref for every n —
  an assumption: EF21 with full gradients has no n in its rate beyond L̃; stochastic methods'
  σ²/(nε²) term would shrink with n (not applied, so the count is an upper bound there).
* **D-PSGD, DCD-PSGD, ECD-PSGD**: Koloskova, Loizou, Boreiri, Jaggi, Stich, *A unified theory
  of decentralized SGD with changing topology and local updates* (ICML 2020), Theorem 2
  (non-convex): T = O(σ²/(nε²) + (ζ + σ√p)/(p ε^{3/2}) + 1/(p ε)) with p the consensus rate,
  ‖XW − X̄‖² ≤ (1 − p)‖X − X̄‖², i.e. p = 1 − ρ² for a symmetric static W. The transient
  terms scale with 1/p; the first is the topology-free (all-reduce) term. So
  S = S_0 + (S_ref − S_0)·p_ref/p, where S_0 is the count of the config's ``allreduce_sgd``
  at n_ref when it has one (else 0: the whole count scales, an upper bound). The theorem
  covers D-PSGD; DCD/ECD-PSGD (Tang et al. 2018) reduce to it with C = identity and their
  bounds carry extra compression terms — the same scaling for them is a **heuristic**.
* **CHOCO-SGD**: Koloskova, Lin, Stich, Jaggi, *Decentralized deep learning with arbitrary
  communication compression* (ICLR 2020), Theorem 4.1 (non-convex): the transient terms scale
  with 1/c, c = δ²ω/82 (δ = the spectral gap 1 − ρ, ω the compression quality), so
  S = S_0 + (S_ref − S_0)·δ_ref²/δ².
* **BEER**: **heuristic** — its bound was not consulted here; decomp's notes (docs/algorithms.md)
  put its step size a factor of the spectral gap below 1/L, so the whole count is scaled by
  δ_ref/δ (S_0 = 0).

All of this fixes the *order* from the theory and the constant from one measured point; it is a
model, not a measurement. At 16,384 ranks a small data set (a9a: 32,561 rows) leaves ~2 rows per
node, far from the n_ref the constant was measured at.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decomp.algorithms import registry
from decomp.errors import ConfigError
from decomp.theory import StepsScaling

__all__ = ["Rule", "StepsReference", "read_curve", "rule_for", "scale_steps",
           "steps_from_rows"]


#: how a method's step count depends on W — declared by its class (``steps_scaling``)
Rule = StepsScaling


def rule_for(algorithm: str) -> Rule:
    """The scaling rule of a registered method, as its class declares it (``steps_scaling``);
    a ConfigError for an unknown name or a class that declares none."""
    cls = registry.get(algorithm).cls
    rule = getattr(cls, "steps_scaling", None)
    if rule is None:
        raise ConfigError(f"{algorithm} ({cls.__name__}) does not declare how its steps to a "
                          "target scale with the topology: give the class a steps_scaling "
                          "(decomp.theory.StepsScaling; TOPOLOGY_FREE when every rank applies "
                          "the same update), or model it at the reference size only")
    return rule


def _measure(rule: Rule, rho: float) -> float:
    if rule.measure == "p":
        return 1.0 - rho * rho
    if rule.measure == "delta2":
        return (1.0 - rho) ** 2
    return 1.0 - rho


def scale_steps(algorithm: str, s_ref: float, rho_ref: float, rho: float,
                s_base: float | None = None, *, bound: bool = False) -> tuple[float, str]:
    """(steps, how) on a W with ``rho`` from S_ref measured on a W with ``rho_ref`` (module
    doc); s_base: the topology-free part (the all-reduce count), None for 0. bound: the upper
    bound over every split S_ref = S_0 + transient, S_ref · max(1, q_ref/q) — the whole count
    scales on a worse W, and a better W cannot need more than S_ref."""
    rule = rule_for(algorithm)
    if rule.measure == "none":
        return float(s_ref), "measured (topology-free)"
    q_ref, q = _measure(rule, rho_ref), _measure(rule, rho)
    if q <= 0:
        return math.inf, "W does not mix (gap 0)"
    tag = "heuristic" if rule.heuristic else "theory"
    if bound:
        return float(s_ref) * max(1.0, q_ref / q), f"{tag}: {rule.measure} scaling, upper bound"
    s0 = min(float(s_base), float(s_ref)) if (rule.base and s_base is not None) else 0.0
    steps = s0 + (s_ref - s0) * q_ref / q
    return steps, f"{tag}: {rule.measure} scaling" + (" + all-reduce part" if s0 else "")


@dataclass(frozen=True)
class StepsReference:
    """Measured steps to target per method label at n_ref workers on the config's topology;
    target: the ‖∇f‖² threshold (None when the counts were given directly)."""

    steps: dict[str, float | None]
    n_ref: int
    target: float | None
    source: str


def steps_from_rows(rows: Iterable[Mapping[str, Any]], target: float,
                    key: str = "grad_norm_sq") -> dict[str, float | None]:
    """First logged step at which ``key`` ≤ target, per method label (None: never)."""
    out: dict[str, float | None] = {}
    for r in rows:
        label = str(r.get("method", ""))
        out.setdefault(label, None)
        v = r.get(key)
        if out[label] is None and v is not None and math.isfinite(float(v)) \
                and float(v) <= target:
            out[label] = float(r["step"])
    return out


def read_curve(path: str | Path, target: float, n_ref: int | None = None) -> StepsReference:
    """Steps to ``target`` from a sim/run output: a ``metrics.jsonl`` file or its folder
    (n_ref read from the ``summary.json`` beside it unless given)."""
    p = Path(path)
    metrics = p / "metrics.jsonl" if p.is_dir() else p
    if not metrics.is_file():
        raise ConfigError(f"no metrics file at {metrics} (give a decomp sim --out folder or its "
                          "metrics.jsonl)")
    rows = []
    for i, line in enumerate(metrics.read_text().splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise ConfigError(f"{metrics}:{i + 1}: not JSON ({e})") from None
    if n_ref is None:
        summary = metrics.parent / "summary.json"
        try:
            n_ref = int(json.loads(summary.read_text())["run"]["n_workers"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"cannot tell how many workers the curve {metrics} was run with "
                              "(no summary.json beside it): give --sim-workers") from None
    return StepsReference(steps_from_rows(rows, target), n_ref, target, f"curve {metrics}")
