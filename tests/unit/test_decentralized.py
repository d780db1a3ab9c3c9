"""Decentralized family without MPI: the reference's identities, config checks, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decomp.algorithms import (
    CHOCOSGD,
    DCDPSGD,
    DECENTRALIZED,
    ECDPSGD,
    MASTER_WORKER,
    AllreduceCompressed,
    DecentralizedAlgorithm,
    Stopwatch,
    family,
)
from decomp.compress import Identity, TopK, make_compressor
from decomp.config import dump_toml, load_config
from decomp.data import load_dataset
from decomp.errors import ConfigError
from decomp.problems import initial_point, split_problem
from decomp.runner import (
    MethodResult,
    build_mixing,
    format_table,
    plan_method,
    plan_methods,
    resolve_lr,
    simulate_config,
)
from decomp.sim import simulate, simulate_decentralized
from decomp.topologies import MixingMatrix, TopologyError, mixing_matrix


def build_algorithm(m: Any) -> Any:
    """The algorithm object the runner builds for a [[methods]] entry."""
    return plan_method(m).algorithm

REPO = Path(__file__).resolve().parents[2]
N = 6
STEPS = 30


@pytest.fixture(scope="module")
def work():
    ds = load_dataset("breast_cancer", scale="standard")
    return split_problem(ds, "logistic", N), initial_point("normal", ds.n_features, seed=2)


def _qsgd(levels: int = 4):
    return make_compressor({"kind": "qsgd", "levels": levels})


def _grads(probs, X, t, batch):
    from decomp.problems import oracle_grad

    return np.stack([oracle_grad(p, X[i], seed=0, worker=i, step=t, batch_size=batch)
                     for i, p in enumerate(probs)])


# ------------------------------------------------------------------ reference vs equations
def test_dpsgd_is_w_x_minus_gamma_g(work) -> None:
    probs, x0 = work
    W = mixing_matrix("ring", N)
    tr = simulate_decentralized("dpsgd", probs, x0, W, lr=0.3, steps=STEPS, batch_size=8)
    X, Wd = np.tile(x0, (N, 1)), W.dense()
    for t in range(1, STEPS + 1):
        X = Wd @ X - 0.3 * _grads(probs, X, t, 8)
        np.testing.assert_allclose(tr.xs[t], X, rtol=1e-12, atol=1e-13)
    assert tr.consensus_distance()[-1] > 0  # heterogeneous shards: the nodes disagree


@pytest.mark.parametrize("algorithm,kw", [("dcd_psgd", {}), ("ecd_psgd", {}),
                                          ("ecd_psgd", {"t_start": 5})])
def test_identity_compressor_reduces_to_dpsgd(work, algorithm: str, kw: dict) -> None:
    """DCD-PSGD (x + (x½ − x)) and ECD-PSGD (ỹ stays equal to x) with C = identity are D-PSGD."""
    probs, x0 = work
    W = mixing_matrix("ring", N)
    ref = simulate_decentralized("dpsgd", probs, x0, W, lr=0.3, steps=STEPS, batch_size=8)
    tr = simulate_decentralized(algorithm, probs, x0, W, lr=0.3, steps=STEPS, batch_size=8,
                                compressor=Identity(), **kw)
    scale = np.abs(ref.xs).max()
    assert np.abs(tr.xs - ref.xs).max() <= 1e-12 * scale
    if algorithm == "ecd_psgd":  # the estimates track the models exactly (up to rounding)
        assert np.abs(tr.state["Y"] - tr.xs[-1]).max() <= 1e-12 * scale


@pytest.mark.parametrize("topology", ["ring", "complete", "star"])
def test_choco_identity_gamma_1_is_adapt_then_combine(work, topology: str) -> None:
    probs, x0 = work
    W = mixing_matrix(topology, N)
    tr = simulate_decentralized("choco_sgd", probs, x0, W, lr=0.3, steps=STEPS, batch_size=8,
                                compressor=Identity(), consensus_step=1.0)
    X, Wd = np.tile(x0, (N, 1)), W.dense()
    for t in range(1, STEPS + 1):
        X = Wd @ (X - 0.3 * _grads(probs, X, t, 8))
        np.testing.assert_allclose(tr.xs[t], X, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("topology", ["ring", "torus", "exponential"])
def test_pure_gossip_contracts_by_rho_squared(work, topology: str) -> None:
    probs, x0 = work
    W = mixing_matrix(topology, N)
    X0 = np.random.default_rng(0).standard_normal((N, x0.size))
    tr = simulate_decentralized("dpsgd", probs, x0, W, lr=0.0, steps=STEPS, X0=X0)
    cd = tr.consensus_distance()
    assert cd[0] > 1
    rho2 = W.rho ** 2
    for t in range(STEPS):  # (the ratio tends to exactly rho² along the slowest eigenvector)
        assert cd[t + 1] <= rho2 * cd[t] * (1 + 1e-6) + 1e-28, (t, cd[t + 1] / cd[t], rho2)
    np.testing.assert_allclose(tr.xbar[-1], X0.mean(axis=0), rtol=1e-12, atol=1e-12)


def test_dcd_replicas_and_bytes(work) -> None:
    probs, x0 = work
    W = mixing_matrix("ring", N)
    C = _qsgd(4)
    tr = simulate_decentralized("dcd_psgd", probs, x0, W, lr=0.1, steps=5, compressor=C)
    assert (tr.bytes_sent == 5 * 2 * C.payload_bytes(x0.size, x0.dtype)).all()
    assert (tr.bytes_received == tr.bytes_sent).all()
    dense = simulate_decentralized("dpsgd", probs, x0, W, lr=0.1, steps=5)
    assert (dense.bytes_sent == 5 * 2 * 8 * x0.size).all()


def test_allreduce_baselines_equal_the_master_worker_reference(work) -> None:
    probs, x0 = work
    W = mixing_matrix("ring", N)
    C = _qsgd(2)
    q = simulate_decentralized("allreduce_qsgd", probs, x0, W, lr=0.2, steps=STEPS,
                               compressor=C, batch_size=8)
    mw = simulate("dcgd", probs, x0, lr=0.2, steps=STEPS, compressor=C, batch_size=8)
    np.testing.assert_allclose(q.xs[:, 0], mw.xs, rtol=1e-12, atol=1e-14)
    assert (q.xs == q.xs[:, :1]).all()  # every node holds the same model
    np.testing.assert_array_equal(q.bytes_sent, mw.bytes_up)
    s = simulate_decentralized("allreduce_sgd", probs, x0, W, lr=0.2, steps=STEPS, batch_size=8)
    gd = simulate("sgd", probs, x0, lr=0.2, steps=STEPS, batch_size=8)
    np.testing.assert_allclose(s.xs[:, 0], gd.xs, rtol=1e-12, atol=1e-14)


def test_choco_with_top_k_converges(work) -> None:
    probs, x0 = work
    W = mixing_matrix("ring", N)
    tr = simulate_decentralized("choco_sgd", probs, x0, W, lr=0.2, steps=300,
                                compressor=TopK(3), consensus_step=0.3)
    g0 = np.mean([p.grad(tr.xbar[0]) for p in probs], axis=0)
    g1 = np.mean([p.grad(tr.xbar[-1]) for p in probs], axis=0)
    assert g1 @ g1 < 0.05 * (g0 @ g0)
    # heterogeneous shards: a constant step leaves a small consensus error, not zero
    assert tr.consensus_distance()[-1] < 0.01


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("cls", [DCDPSGD, ECDPSGD, AllreduceCompressed])
def test_biased_compressor_is_refused_with_the_reason(cls) -> None:
    with pytest.raises(ConfigError, match=r"needs an unbiased compressor.*TopK\(k=2\) is biased"):
        cls(TopK(2))
    cls(_qsgd())  # unbiased: fine
    CHOCOSGD(TopK(2), consensus_step=0.5)  # CHOCO allows biased compressors


def test_biased_compressor_from_a_config() -> None:
    cfg = load_config({"methods": [{"algorithm": "dcd_psgd", "lr": 0.1,
                                    "compressor": {"kind": "topk", "k": 1}}]})
    with pytest.raises(ConfigError, match="dcd_psgd needs an unbiased compressor"):
        build_algorithm(cfg.methods[0])
    with pytest.raises(ConfigError, match="unbiased"):
        simulate_decentralized("ecd_psgd", [], np.zeros(3), np.eye(1), lr=0.1, steps=1,
                               compressor=TopK(1))


@pytest.mark.parametrize("t_start", [0, -1, 1.5])
def test_ecd_t_must_start_at_1(t_start) -> None:
    with pytest.raises(ConfigError, match="t_start must be an integer >= 1.*t = 0"):
        ECDPSGD(Identity(), t_start=t_start)
    if isinstance(t_start, int):
        cfg = load_config({"methods": [{"algorithm": "ecd_psgd", "lr": 0.1,
                                        "t_start": t_start}]})
        with pytest.raises(ConfigError, match="t_start"):
            build_algorithm(cfg.methods[0])
        with pytest.raises(ConfigError, match="t_start"):
            simulate_decentralized("ecd_psgd", [], np.zeros(3), np.eye(1), lr=0.1, steps=1,
                                   t_start=t_start)


def test_method_option_checks() -> None:
    def build(**m):
        return build_algorithm(load_config({"methods": [m]}).methods[0])

    with pytest.raises(ConfigError, match="needs an explicit lr.*'1/L'"):
        build(algorithm="dpsgd")  # lr defaults to "theory"
    with pytest.raises(ConfigError, match="needs consensus_step"):
        build(algorithm="choco_sgd", lr=0.1)
    with pytest.raises(ConfigError, match=r"consensus_step must be in \(0, 1\]"):
        build(algorithm="choco_sgd", lr=0.1, consensus_step=1.5)
    with pytest.raises(ConfigError, match=r"consensus_step applies to (\w+, )*choco_sgd(, \w+)* "
                                          r"only, not to dcd_psgd"):
        build(algorithm="dcd_psgd", lr=0.1, consensus_step=0.5)
    with pytest.raises(ConfigError, match="consensus_step applies to the decentralized family"):
        build(algorithm="ef21", consensus_step=0.5)
    with pytest.raises(ConfigError, match="t_start applies to ecd_psgd only"):
        build(algorithm="choco_sgd", lr=0.1, consensus_step=0.5, t_start=2)
    with pytest.raises(ConfigError, match="takes no compressor"):
        build(algorithm="dpsgd", lr=0.1, compressor="topk")
    with pytest.raises(ConfigError, match="did you mean 'dcd_psgd'"):
        build(algorithm="dcd_pgsd", lr=0.1)
    alg = build(algorithm="allreduce_qsgd", lr=0.1)
    assert repr(alg.compressor) == "QSGD(levels=16)"  # the default
    alg = build(algorithm="ecd_psgd", lr="1/L")
    assert alg.t_start == 1
    m = load_config({"methods": [{"algorithm": "dpsgd", "lr": "1/L",
                                  "lr_multiplier": 0.5}]}).methods[0]
    assert resolve_lr(m, build_algorithm(m), 4.0, [4.0], 3) == 0.125


def test_decentralized_method_on_a_dedicated_master_is_an_error() -> None:
    cfg = load_config({"run": {"master": "dedicated"},
                       "methods": [{"algorithm": "dpsgd", "lr": 0.1}]})
    with pytest.raises(ConfigError, match="decentralized method.*run.master = 'shared'"):
        plan_methods(cfg)


def test_topology_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'topology.wieghts'.*'weights'"):
        load_config({"topology": {"wieghts": "metropolis"}, "methods": [{"algorithm": "gd"}]})
    cfg = load_config({"topology": {"kind": "random-regular", "options": {"degree": 3,
                                                                         "seed": 4}},
                       "methods": [{"algorithm": "dpsgd", "lr": 0.1}]})
    W = build_mixing(cfg.topology, 8)
    assert W.degree_max == 3 == W.degree_min
    bad = load_config({"topology": {"exchange": "carrier-pigeon"},
                       "methods": [{"algorithm": "dpsgd", "lr": 0.1}]})
    with pytest.raises(ConfigError, match="topology.exchange must be one of"):
        build_mixing(bad.topology, 4)


def test_w_file_of_the_wrong_size(tmp_path: Path) -> None:
    np.save(tmp_path / "W6.npy", mixing_matrix("ring", 6).dense())
    cfg = load_config({"topology": {"kind": str(tmp_path / "W6.npy")},
                       "methods": [{"algorithm": "dpsgd", "lr": 0.1}]})
    assert build_mixing(cfg.topology, 6).n == 6
    with pytest.raises(TopologyError, match="W is 6 x 6 but there are 4 ranks"):
        build_mixing(cfg.topology, 4)


def test_non_doubly_stochastic_w(tmp_path: Path) -> None:
    W = mixing_matrix("ring", 4).dense()
    W[0, 0] = 0.5  # row 0 now sums to 1.1667
    np.save(tmp_path / "W.npy", W)
    cfg = load_config({"topology": {"kind": str(tmp_path / "W.npy")},
                       "methods": [{"algorithm": "dpsgd", "lr": 0.1}]})
    with pytest.raises(TopologyError, match="row 0 sums to .*doubly stochastic"):
        build_mixing(cfg.topology, 4)
    with pytest.raises(TopologyError, match="doubly stochastic"):
        simulate_decentralized("dpsgd", [None] * 4, np.zeros(3), MixingMatrix(W), lr=0.1,
                               steps=1)


# ------------------------------------------------------------------ registry, config, table
def test_registry_and_families() -> None:
    assert set(DECENTRALIZED) >= {"dpsgd", "dcd_psgd", "ecd_psgd", "choco_sgd", "beer",
                                  "allreduce_sgd", "allreduce_qsgd"}  # and any added since
    assert all(issubclass(c, DecentralizedAlgorithm) for c in DECENTRALIZED.values())
    assert not set(DECENTRALIZED) & set(MASTER_WORKER)
    assert family("ef21") == "master_worker" and family("choco_sgd") == "decentralized"
    with pytest.raises(ConfigError):
        family("adam")


def test_demo_config_loads_round_trips_and_simulates(tmp_path: Path) -> None:
    cfg = load_config(REPO / "jobs" / "configs" / "decentralized.toml")
    assert [m.algorithm for m in cfg.methods] == ["allreduce_sgd", "allreduce_qsgd", "dpsgd",
                                                  "dcd_psgd", "ecd_psgd", "choco_sgd"]
    assert cfg.topology.kind == "ring" and cfg.problem.dataset == "a9a"
    (tmp_path / "c.toml").write_text(dump_toml(cfg))
    assert load_config(tmp_path / "c.toml") == cfg
    plan_methods(cfg)
    small = load_config(REPO / "jobs" / "configs" / "decentralized.toml",
                        ["problem.dataset=breast_cancer", "problem.scale=standard",
                         "run.steps=20"])
    res = simulate_config(small, 4)
    assert [r.status for r in res] == ["ok"] * 6
    assert all(r.family == "decentralized" for r in res)
    assert res[0].consensus_distance < 1e-25 < res[2].consensus_distance
    table = format_table(res)
    for col in ("loss(xbar)", "consensus", "MB sent/rank", "B/step/rank", "wall s"):
        assert col in table


def test_table_keeps_the_master_worker_layout() -> None:
    mw = MethodResult("EF21", "ef21", "TopK(k=1)", 0.1, 10, 0.5, 1e-3, 2080.0, 9840.0, 0.1)
    table = format_table([mw])
    assert "final ||grad f||^2" in table and "consensus" not in table
    dec = MethodResult("D", "dpsgd", "-", 0.1, 10, 0.5, 1e-3, 8 * 19680.0, 8 * 19680.0, 0.2,
                       family="decentralized", consensus_distance=0.01, compute_s=0.1,
                       compress_s=0.0, comm_s=0.1)
    assert dec.bytes_per_step == 1968.0
    rows = format_table([mw, dec]).splitlines()
    assert "consensus" in rows[0] and "0.100/0.000/0.100" in rows[3]


def test_stopwatch() -> None:
    sw = Stopwatch()
    with sw:
        sw.add(2, 0.0)
    sw.add(1, 0.5)
    assert all(v >= 0 for v in sw.totals) and sw.totals[1] == 0.5
    assert set(sw.as_dict()) == {"compute_s", "compress_s", "comm_s"}
    sw.reset()
    assert sw.totals == [0.0, 0.0, 0.0]
