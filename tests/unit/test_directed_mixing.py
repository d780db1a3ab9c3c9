"""Which decentralized method takes a directed W (docs/topologies.md, "Directed W"): the
refusal where a method's analysis needs W = Wᵀ, with the reason, for every registered method,
through the plan as `decomp run` and `decomp sim` build it; and the reference on a directed W
against a dense W @ X recurrence (a transposed weight in decomp.sim would show there). The MPI
runs are in tests/mpi/test_directed_mixing.py."""

from __future__ import annotations

import numpy as np
import pytest

from decomp.algorithms import registry
from decomp.algorithms.registry import DECENTRALIZED_FAMILY
from decomp.config import load_config
from decomp.data import load_dataset
from decomp.errors import ConfigError
from decomp.problems import initial_point, oracle_grad, split_problem
from decomp.runner.plan import mixing_for, plan_methods
from decomp.sim import simulate_decentralized
from decomp.topologies import MixingMatrix, mixing_matrix, resolve_mixing

#: methods whose analysis needs a symmetric W, and a word of the reason each gives (any other
#: class declaring ``needs_symmetric_w`` is checked the same way, with its own reason)
NEEDS_SYMMETRIC = {"dcd_psgd": "Tang et al. 2018", "ecd_psgd": "Tang et al. 2018",
                   "choco_sgd": "Koloskova et al. 2019", "beer": "Zhao et al. 2022"}
#: values for the options a class takes without a default (by option, not by method)
REQUIRED = {"consensus_step": 0.3}


def _build(name: str):
    spec = registry.get(name)
    options = {k: REQUIRED[k] for k, v in spec.options.items() if v is None and k in REQUIRED}
    return spec.build(batch_size=8 if spec.needs_batch else None, options=options)


@pytest.mark.parametrize("name", registry.names(DECENTRALIZED_FAMILY))
def test_every_decentralized_method_says_whether_it_takes_a_directed_W(name: str) -> None:
    alg = _build(name)
    directed = resolve_mixing("one-peer-exponential", 8)
    assert not directed.symmetric
    for W in (mixing_matrix("ring", 8), mixing_matrix("exponential", 8),
              resolve_mixing("one-peer-hypercube", 8)):
        alg.check_mixing(W)  # a symmetric W: every method
    assert bool(alg.needs_symmetric_w) or name not in NEEDS_SYMMETRIC
    if alg.needs_symmetric_w:
        with pytest.raises(ConfigError, match="needs a symmetric W") as e:
            alg.check_mixing(directed)
        assert NEEDS_SYMMETRIC.get(name, alg.needs_symmetric_w) in str(e.value)
        assert "one-peer-exponential" in str(e.value)
    else:
        alg.check_mixing(directed)


def _cfg(methods: list[dict]) -> object:
    return load_config({"name": "t", "problem": {"kind": "logistic", "dataset": "synthetic"},
                        "run": {"steps": 3}, "topology": {"kind": "one-peer-exponential"},
                        "methods": methods})


def test_the_plan_refuses_before_any_data_and_names_the_method() -> None:
    cfg = _cfg([{"algorithm": "dpsgd", "lr": 0.1},
                {"algorithm": "choco_sgd", "name": "CHOCO top-1", "lr": 0.1, "consensus_step": 0.3,
                 "compressor": {"kind": "topk", "k": 1}}])
    with pytest.raises(ConfigError, match=r"^CHOCO top-1: choco_sgd needs a symmetric W"):
        mixing_for(cfg, plan_methods(cfg), 4)
    cfg = _cfg([{"algorithm": "dpsgd", "lr": 0.1}, {"algorithm": "allreduce_sgd", "lr": 0.1}])
    W = mixing_for(cfg, plan_methods(cfg), 4)
    assert W is not None and not W.symmetric


@pytest.mark.parametrize("n", [4, 8])
def test_the_reference_on_a_directed_W_is_the_dense_recurrence(n: int) -> None:
    """decomp.sim's D-PSGD (row by row, in-neighbours ascending) on the one-peer exponential
    graph and on a skewed ring equals X ← W X − γ G(X) with numpy's dense product to rounding;
    with Wᵀ in place of W it does not."""
    ds = load_dataset("breast_cancer", scale="standard")
    probs = split_problem(ds, "logistic", n)
    x0 = initial_point("normal", ds.n_features, seed=3)
    P = np.roll(np.eye(n), 1, axis=1)
    skewed = MixingMatrix(0.5 * np.eye(n) + 0.3 * P + 0.2 * P.T, symmetric=False).validate(n)
    for W in (resolve_mixing("one-peer-exponential", n), skewed):
        tr = simulate_decentralized("dpsgd", probs, x0, W, lr=0.2, steps=15, seed=1,
                                    batch_size=16)
        for M, same in ((W.dense(), True), (W.dense().T, False)):
            X = np.tile(x0, (n, 1))
            for t in range(1, 16):
                G = np.stack([oracle_grad(p, X[i], seed=1, worker=i, step=t, batch_size=16)
                              for i, p in enumerate(probs)])
                X = M @ X - 0.2 * G
            rel = float(np.abs(tr.xs[-1] - X).max() / np.abs(X).max())
            assert (rel <= 1e-13) if same else (rel > 1e-3), (W.name, same, rel)
        # the bytes: one dense model per out-neighbour and step, one per in-neighbour received
        outdeg = np.array([W.out_neighbors(i)[0].size for i in range(n)])
        assert tr.bytes_sent.tolist() == (15 * 8 * ds.n_features * outdeg).tolist()
