"""Constructors and ``check(d)`` refuse what a method's analysis does not cover: an option
outside its range, a compressor of the wrong kind or too large for d (a ConfigError naming the
cause). Written for gaps mutation testing found (docs/testing.md, "Mutation testing")."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("eta", [0.0, -0.5, 1.5, float("nan")])
def test_ef21_sgdm_refuses_a_momentum_weight_outside_0_1(eta: float) -> None:
    """EF21-SGDM's η is in (0, 1]: 0 (the estimate never moves), a negative or a > 1 weight
    is a ConfigError at construction; 1 and a small positive η are accepted."""
    from decomp.algorithms.ef21_sgdm import EF21SGDM
    from decomp.compress import TopK
    from decomp.errors import ConfigError

    with pytest.raises(ConfigError):
        EF21SGDM(TopK(k=2), eta=eta)
    assert EF21SGDM(TopK(k=2), eta=1.0).eta == 1.0
    assert EF21SGDM(TopK(k=2), eta=1e-6).eta == 1e-6


def test_master_worker_methods_refuse_compressors_their_analysis_does_not_cover() -> None:
    """``check(d)``: error feedback needs a contractive compressor (Rand-k is not), DCGD an
    unbiased one (Top-k is not), and any compressor must fit d (Top-k with k > d)."""
    from decomp.algorithms.dense import GD
    from decomp.algorithms.ef import DCGD, EF
    from decomp.algorithms.ef21 import EF21
    from decomp.compress import RandK, TopK
    from decomp.errors import ConfigError

    for alg in (EF21(RandK(k=2)), EF(RandK(k=2)), DCGD(TopK(k=2)), EF21(TopK(k=20)),
                DCGD(RandK(k=20))):
        with pytest.raises(ConfigError):
            alg.check(10)
    for alg in (EF21(TopK(k=2)), DCGD(RandK(k=2)), GD()):
        alg.check(10)  # covered: no error
