"""Torch problems from a config: keys, defaults, refusals; the registry entries of EF21-SGDM and
SGDM, their decomp.sim dispatch, the ``lr`` keyword of the algorithm classes, and
``simulate_config`` / the printed table on a torch config (one process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decomp.algorithms import (
    CHOCOSGD,
    DCDPSGD,
    DPSGD,
    EF21,
    EF21SGDM,
    GD,
    MASTER_WORKER,
    SGDM,
    family,
)
from decomp.compress import QSGD, TopK
from decomp.config import dump_toml, load_config
from decomp.data import load_dataset
from decomp.errors import ConfigError
from decomp.problems import initial_point, split_problem
from decomp.runner import plan_method, plan_methods
from decomp.sim import reference, simulate


def build_algorithm(m: Any) -> Any:
    """The algorithm object the runner builds for a [[methods]] entry."""
    return plan_method(m).algorithm

REPO = Path(__file__).resolve().parents[2]
TOP3 = {"kind": "topk", "k": 3}


def _torch_raw(**problem: Any) -> dict[str, Any]:
    return {"problem": {"kind": "torch", "model": "mlp", "dataset": "synthetic", **problem},
            "methods": [{"algorithm": "sgd", "lr": 0.1, "batch_size": 8}]}


def test_mnist1d_configs_load_with_torch_defaults_and_round_trip(tmp_path: Path) -> None:
    for name in ("mnist1d_ef21.toml", "mnist1d_decentralized.toml"):
        cfg = load_config(REPO / "jobs" / "configs" / name)
        p = cfg.problem
        assert (p.kind, p.model, p.dataset, p.loss, p.shard) == ("torch", "cnn1d", "mnist1d",
                                                                 "cross_entropy", "iid")
        assert (p.dtype, p.buffers, p.weight_decay, p.eval_chunk) == ("float32", "average",
                                                                      0.0, 1024)
        assert cfg.run.x0 == "model"
        plan_methods(cfg)
        for m in cfg.methods:
            build_algorithm(m)
        text = dump_toml(cfg)
        assert "lam" not in text and "n_features" not in text  # numpy-only keys left out
        (tmp_path / name).write_text(text)
        assert load_config(tmp_path / name) == cfg
    algos = [m.algorithm for m in load_config(REPO / "jobs/configs/mnist1d_ef21.toml").methods]
    assert algos == ["sgd", "sgdm", "ef21_sgd", "ef21_sgdm", "ef"]


def test_numpy_configs_keep_their_defaults() -> None:
    cfg = load_config({"methods": [{"algorithm": "gd"}]})
    assert cfg.problem.dtype == "float64" and cfg.run.x0 == "normal"
    assert cfg.problem.model is None and cfg.problem.weight_decay is None
    assert "model" not in dump_toml(cfg)


@pytest.mark.parametrize("raw,match", [
    ({"problem": {"model": "mlp"}}, r"problem.model applies to torch problems only"),
    ({"problem": {"weight_decay": 0.1}}, r"problem.weight_decay applies to torch"),
    ({"run": {"x0": "model"}}, r"run.x0 = 'model'.*needs problem.kind = 'torch'"),
    ({"problem": {"kind": "torhc"}}, r"problem.kind must be one of.*did you mean 'torch'"),
    ({"problem": {"modle": "mlp"}}, r"unknown config key 'problem.modle'; did you mean 'model'"),
])
def test_torch_keys_are_refused_for_the_numpy_problems(raw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config({"methods": [{"algorithm": "gd"}], **raw})


@pytest.mark.parametrize("problem,match", [
    ({"model": None}, r"problem.model is required for kind = 'torch'"),
    ({"lam": 0.5}, r"problem.lam applies to the numpy problems.*weight_decay"),
    ({"n_samples": 50}, r"problem.n_samples applies to the numpy.*dataset_options"),
    ({"dtype": "float64"}, r"torch models train in float32"),
    ({"shard": "random"}, r"problem.shard must be one of iid, contiguous, by_label, dirichlet"),
    ({"buffers": "sum"}, r"problem.buffers must be one of average, local"),
    ({"loss": "hinge"}, r"problem.loss must be one of cross_entropy"),
    ({"weight_decay": -1.0}, r"weight_decay must be >= 0"),
    ({"dirichlet_alpha": 0.0}, r"dirichlet_alpha must be > 0"),
    ({"model_options": 3}, r"problem.model_options' must be"),
])
def test_bad_torch_problem_tables(problem: dict[str, Any], match: str) -> None:
    raw = _torch_raw(**problem)
    if problem.get("model", "x") is None:
        del raw["problem"]["model"]
    with pytest.raises(ConfigError, match=match):
        load_config(raw)


@pytest.mark.parametrize("lr", ["theory", "1/L"])
def test_symbolic_step_sizes_are_refused_for_torch(lr: str) -> None:
    raw = _torch_raw()
    raw["methods"] = [{"algorithm": "ef21_sgd", "compressor": TOP3, "batch_size": 8, "lr": lr},
                      {"algorithm": "dpsgd", "batch_size": 8, "lr": lr}]
    with pytest.raises(ConfigError, match=rf"lr = '{lr}' needs the smoothness constant.*"
                       r"give \[\[methods\]\] lr as a number"):
        plan_methods(load_config(raw))
    raw["methods"] = [{"algorithm": "ef21_sgd", "compressor": TOP3, "batch_size": 8}]
    with pytest.raises(ConfigError, match="'theory' needs the smoothness"):  # the default
        plan_methods(load_config(raw))


def _method(**m: Any) -> Any:
    return load_config({"methods": [m]}).methods[0]


def test_momentum_methods_from_the_config_and_misplaced_options() -> None:
    assert MASTER_WORKER["ef21_sgdm"] is EF21SGDM and MASTER_WORKER["sgdm"] is SGDM
    assert family("ef21_sgdm") == family("sgdm") == "master_worker"
    a = build_algorithm(_method(algorithm="ef21_sgdm", compressor={"kind": "topk", "k": 3},
                                batch_size=8, eta=0.2, init_batch=64, init="full"))
    assert isinstance(a, EF21SGDM) and (a.eta, a.init_batch, a.init_mode) == (0.2, 64, "full")
    assert build_algorithm(_method(algorithm="ef21_sgdm", compressor=TOP3,
                                   batch_size=8)).init_mode == "full"  # the class default
    s = build_algorithm(_method(algorithm="sgdm", batch_size=8, momentum=0.5, nesterov=True))
    assert isinstance(s, SGDM) and (s.momentum, s.nesterov) == (0.5, True)
    assert build_algorithm(_method(algorithm="sgdm", batch_size=8)).momentum == 0.9
    for algo in ("ef21_sgdm", "sgdm"):
        with pytest.raises(ConfigError, match=f"algorithm '{algo}' needs batch_size"):
            build_algorithm(_method(algorithm=algo, compressor=TOP3 if algo != "sgdm"
                                    else None))
    with pytest.raises(ConfigError, match="takes no compressor"):
        build_algorithm(_method(algorithm="sgdm", batch_size=8, compressor=TOP3))
    with pytest.raises(ConfigError, match="eta applies to ef21_sgdm only.*not to ef21_sgd"):
        build_algorithm(_method(algorithm="ef21_sgd", compressor=TOP3, batch_size=8, eta=0.1))
    with pytest.raises(ConfigError, match="momentum applies to the master–worker family only"):
        build_algorithm(_method(algorithm="dcd_psgd", compressor="qsgd", batch_size=8,
                                lr=0.1, momentum=0.9))
    with pytest.raises(ConfigError, match="nesterov applies to sgdm only"):
        build_algorithm(_method(algorithm="sgd", batch_size=8, nesterov=True))
    with pytest.raises(ConfigError, match="init_batch must be >= 1"):
        build_algorithm(_method(algorithm="ef21_sgdm", compressor=TOP3, batch_size=8,
                                init_batch=0))


def test_every_algorithm_class_takes_an_optional_lr() -> None:
    assert EF21(compressor=TopK(ratio=0.01), lr=0.1).lr == 0.1  # the example
    assert EF21(TopK(3)).lr is None and GD(lr=2).lr == 2.0
    assert DCDPSGD(QSGD(levels=127), lr=0.3).lr == 0.3
    assert CHOCOSGD(TopK(3), consensus_step=0.5, lr=0.2).lr == 0.2 and DPSGD().lr is None
    for bad in (0, -1.0, "0.1", True):
        with pytest.raises(ConfigError, match="lr must be a positive number"):
            EF21(TopK(3), lr=bad)
        with pytest.raises(ConfigError, match="lr must be a positive number"):
            DPSGD(lr=bad)
    with pytest.raises(ConfigError, match="unknown option"):
        GD(lr=0.1, momentum=0.9)
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        GD(batch_size=0)


@pytest.fixture(scope="module")
def logistic():
    ds = load_dataset("breast_cancer", scale="standard", dtype="float64")
    return split_problem(ds, "logistic", 3), initial_point("normal", ds.n_features, seed=1)


def test_simulate_dispatches_ef21_sgdm_and_sgdm(logistic) -> None:
    probs, x0 = logistic
    kw = {"lr": 0.1, "steps": 6, "seed": 2, "batch_size": 16}
    a = simulate("ef21_sgdm", probs, x0, compressor=TopK(4), eta=0.3, init_batch=32, **kw)
    b = reference(EF21SGDM(TopK(4), eta=0.3, init_batch=32, init="full", batch_size=16), probs,
                  x0, lr=0.1, steps=6, seed=2)
    np.testing.assert_array_equal(a.xs, b.xs)  # init defaults to "full", as in EF21SGDM
    np.testing.assert_array_equal(a.bytes_up, b.bytes_up)
    c = simulate("ef21_sgdm", probs, x0, compressor=TopK(4), init="compressed", **kw)
    assert not np.array_equal(c.xs[-1], a.xs[-1])
    d = simulate("sgdm", probs, x0, momentum=0.5, nesterov=True, **kw)
    e = reference(SGDM(momentum=0.5, nesterov=True, batch_size=16), probs, x0, lr=0.1,
                  steps=6, seed=2)
    np.testing.assert_array_equal(d.xs, e.xs)
    with pytest.raises(ConfigError, match="eta applies to ef21_sgdm only, not to ef21"):
        simulate("ef21", probs, x0, compressor=TopK(4), eta=0.5, **kw)
    with pytest.raises(ConfigError, match="sends dense vectors and takes no compressor"):
        simulate("sgdm", probs, x0, compressor=TopK(4), **kw)
    # EF21's default is unchanged: "compressed"
    f = simulate("ef21", probs, x0, compressor=TopK(4), lr=0.1, steps=3)
    g = simulate("ef21", probs, x0, compressor=TopK(4), lr=0.1, steps=3, init="compressed")
    np.testing.assert_array_equal(f.xs, g.xs)


def test_simulate_config_on_a_torch_config_reports_test_metrics() -> None:
    import torch  # noqa: F401  (pinned: a missing torch fails here)

    from decomp.runner import format_table, simulate_config

    raw = {"seed": 3, "problem": {"kind": "torch", "model": "mlp",
                                  "model_options": {"hidden": [16]}, "dataset": "synthetic",
                                  "dataset_options": {"n_samples": 300, "n_classes": 3},
                                  "shard": "dirichlet", "dirichlet_alpha": 2.0},
           "run": {"steps": 30},
           "methods": [{"algorithm": "sgdm", "lr": 0.1, "batch_size": 8},
                       {"algorithm": "ef21_sgdm", "compressor": {"kind": "topk", "ratio": 0.1},
                        "lr": 0.3, "batch_size": 8, "eta": 0.5}]}
    res = simulate_config(load_config(raw), 3)
    assert [r.status for r in res] == ["ok", "ok"]
    assert all(r.test_acc is not None and r.test_acc > 0.6 for r in res), res
    d = (10 * 16 + 16) + (16 * 3 + 3)  # mlp, 10 features, hidden 16, 3 classes
    assert res[0].bits_up == 8 * 4 * d * 30  # dense float32 gradients, every step
    table = format_table(res)
    assert table.splitlines()[0].split()[:5] == ["method", "steps", "train", "loss", "test"]
    assert "MB up/worker" in table and "sgdm" in table
    raw["methods"] = [{"algorithm": "dcd_psgd", "compressor": {"kind": "qsgd", "levels": 127},
                       "lr": 0.3, "batch_size": 8}]
    dec = simulate_config(load_config(raw), 3)
    assert dec[0].test_acc is not None and dec[0].test_acc_min is not None
    assert dec[0].test_acc_min <= dec[0].test_acc_mean
    assert "acc x_i mean/min" in format_table(dec)
