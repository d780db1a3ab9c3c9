"""Fault catalogue, slow start (docs/reliability.md, "Bad input"): L and L_i are computed
only when a step size needs them, and never through a d × d Gram matrix when d is large (a
64-row LIBSVM file with d = 3·10^6 took 139 s and gigabytes before)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from decomp import problems
from decomp.config import load_config
from decomp.problems import Logistic, lambda_max_gram
from decomp.runner import simulate_config

CONFIG = """
name = "lazy"
[problem]
dataset = "breast_cancer"
scale = "standard"
[run]
steps = 20
log_every = 10
[[methods]]
name = "EF21"
algorithm = "ef21"
compressor = {{ kind = "topk", k = 2 }}
lr = {lr}
"""


def _cfg(tmp_path, lr: str):  # type: ignore[no-untyped-def]
    f = tmp_path / "c.toml"
    f.write_text(CONFIG.format(lr=lr))
    return load_config(f)


def test_a_numeric_lr_never_computes_l(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []
    real = Logistic.smoothness

    def counted(self: Logistic) -> float:
        calls.append(1)
        return real(self)

    monkeypatch.setattr(Logistic, "smoothness", counted)
    r = simulate_config(_cfg(tmp_path, "0.01"), 2)
    assert r[0].status == "ok" and calls == []
    r = simulate_config(_cfg(tmp_path, '"theory"'), 2)
    assert r[0].status == "ok" and len(calls) == 3  # f and both f_i, once each


def test_wide_sparse_features_need_no_d_by_d_gram() -> None:
    """64 rows, d = 3·10^6, 2,000 entries a row: the Gram AᵀA would hold up to 2.6·10^8
    entries; λ_max(AAᵀ) (64 × 64) gives the same value in a few MB."""
    rng = np.random.default_rng(0)
    n, d, per_row = 64, 3_000_000, 2_000
    cols = rng.integers(0, d, size=(n, per_row))
    A = sp.csr_matrix((rng.normal(size=n * per_row), cols.ravel(),
                       np.arange(0, n * per_row + 1, per_row)), shape=(n, d))
    tracemalloc.start()
    try:
        top = lambda_max_gram(A)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MiB"
    # the oracle: the SVD of the columns that hold entries (the others add nothing), sliced
    # before densifying (A.toarray() alone is 1.5 GB)
    assert top == pytest.approx(np.linalg.svd(A[:, np.unique(cols)].toarray(),
                                              compute_uv=False)[0] ** 2, rel=1e-10)


def test_lanczos_on_the_operator_matches_the_exact_value(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Both dimensions above the dense limit: eigsh on v ↦ Aᵀ(Av), checked against
    eigvalsh of the Gram (the limit lowered so the Gram stays small here)."""
    rng = np.random.default_rng(1)
    A = sp.random(300, 400, density=0.05, random_state=rng, format="csr")
    exact = float(np.linalg.eigvalsh((A.T @ A).toarray())[-1])
    monkeypatch.setattr(problems, "_DENSE_MAX_D", 50)
    assert lambda_max_gram(A) == pytest.approx(exact, rel=1e-9)
