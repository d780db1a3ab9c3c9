"""Step sizes from the EF21 theory (Richtárik, Sokolov, Fatkhullin 2021, Theorem 1).

γ = 1 / (L + L̃ sqrt(β/θ)),  θ = 1 − sqrt(1 − α),  β = (1 − α)/(1 − sqrt(1 − α)),
L̃ = sqrt(mean_i L_i²). With α = 1 (no compression) β = 0 and γ = 1/L.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from decomp.errors import ConfigError


def ef21_theta_beta(alpha: float) -> tuple[float, float]:
    """(θ, β) of the EF21 analysis for a contractive compressor with constant α ∈ (0, 1]."""
    if not 0.0 < alpha <= 1.0:
        raise ConfigError(f"contraction constant alpha must be in (0, 1], got {alpha}")
    s = math.sqrt(1.0 - alpha)
    theta = 1.0 - s
    beta = 0.0 if alpha == 1.0 else (1.0 - alpha) / (1.0 - s)
    return theta, beta


def ef21_stepsize(L: float, Ls: Sequence[float], alpha: float) -> float:
    """γ = 1/(L + L̃ sqrt(β/θ)) with L̃ = sqrt(mean(L_i²))."""
    theta, beta = ef21_theta_beta(alpha)
    L_tilde = float(np.sqrt(np.mean(np.square(np.asarray(Ls, dtype=np.float64)))))
    return 1.0 / (L + L_tilde * math.sqrt(beta / theta))


def ef21_pp_stepsize(L: float, Ls: Sequence[float], alpha: float, p: float) -> float:
    """EF21-PP's step size (Fatkhullin et al. 2021, EF21 with Bells & Whistles, Theorem 7,
    non-convex case) for every worker taking part with probability p_i = p ∈ (0, 1]:

        γ = 1 / (L + sqrt(B / θ_p)),   θ = 1 − (1 + s)(1 − α),   β = (1 + 1/s)(1 − α),
        θ_p = ρ p_min + θ p_max − ρ − (p_max − p_min) = θ p − ρ (1 − p),
        B   = (β p_max + (1 + 1/ρ)(1 − p_min)) L̃² = (β p + (1 + 1/ρ)(1 − p)) L̃²

    for any s > 0, ρ > 0 with θ_p > 0. The largest γ the theorem allows is returned: for a
    given s the best ρ solves a ρ² + 2 c ρ − θ p = 0 (a = β p + 1 − p, c = 1 − p), and s is
    found by a golden-section search on (0, α/(1 − α)) (θ > 0 there). With p = 1 this is
    :func:`ef21_stepsize` (then ρ drops out and s = 1/sqrt(1 − α) − 1 is optimal).
    """
    if not 0.0 < p <= 1.0:
        raise ConfigError(f"participation probability p must be in (0, 1], got {p}")
    if not 0.0 < alpha <= 1.0:
        raise ConfigError(f"contraction constant alpha must be in (0, 1], got {alpha}")
    L_tilde = float(np.sqrt(np.mean(np.square(np.asarray(Ls, dtype=np.float64)))))
    if p == 1.0:
        return ef21_stepsize(L, Ls, alpha)

    def ratio(s: float) -> float:  # min over ρ of B / (θ_p L̃²) at this s
        theta = 1.0 - (1.0 + s) * (1.0 - alpha)
        beta = (1.0 + 1.0 / s) * (1.0 - alpha) if alpha < 1.0 else 0.0
        a, c, q = beta * p + 1.0 - p, 1.0 - p, theta * p
        rho = (-c + math.sqrt(c * c + a * q)) / a
        return (a + c / rho) / (q - c * rho)

    if alpha == 1.0:  # no compression error: θ = 1 and β = 0 for every s
        best = ratio(1.0)
    else:
        lo, hi = 0.0, alpha / (1.0 - alpha)
        inv = (math.sqrt(5.0) - 1.0) / 2.0
        for _ in range(200):  # golden section: the ratio is unimodal in s on (0, α/(1−α))
            m1, m2 = hi - inv * (hi - lo), lo + inv * (hi - lo)
            if ratio(m1) < ratio(m2):
                hi = m2
            else:
                lo = m1
        best = ratio(0.5 * (lo + hi))
    return 1.0 / (L + L_tilde * math.sqrt(best))


@dataclass(frozen=True)
class StepsScaling:
    """How a method's steps to a target depend on the mixing matrix W (a class declaration,
    ``steps_scaling``, read by :mod:`decomp.netmodel.steps`).

    measure: ``none`` (topology-free) | ``p`` = 1 − ρ² | ``delta2`` = δ² | ``delta`` = δ (the
    transient terms of the count scale with 1/measure); base: the topology-free part of the
    count is the config's baseline method's count (see ``baseline``); source: where the
    scaling comes from; heuristic: not a theorem for this method; baseline: this method's count
    *is* that topology-free part (the dense all-reduce of the decentralized family).
    """

    measure: str
    base: bool
    source: str
    heuristic: bool
    baseline: bool = False


#: the scaling of every method whose ranks all apply the same update (the master–worker
#: family, the all-reduce baselines)
TOPOLOGY_FREE = StepsScaling("none", False, "independent of the topology (same update on every "
                             "rank)", False)
