"""Config loading: unknown keys, types, overrides, method checks, world size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from decomp.config import apply_override, dump_toml, load_config, parse_value
from decomp.errors import ConfigError, LaunchError
from decomp.runner import check_world, plan_method


def build_algorithm(m: Any) -> Any:
    """The algorithm object the runner builds for a [[methods]] entry."""
    return plan_method(m).algorithm

REPO = Path(__file__).resolve().parents[2]
BASE = {"methods": [{"algorithm": "ef21", "compressor": {"kind": "topk", "k": 1}}]}


def _cfg(**extra):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    raw["methods"] = [dict(m) for m in BASE["methods"]]
    raw.update(extra)
    return raw


def test_demo_config_loads_and_round_trips(tmp_path) -> None:
    cfg = load_config(REPO / "jobs" / "configs" / "demo.toml")
    assert [m.algorithm for m in cfg.methods] == ["gd", "ef", "ef21"]
    (tmp_path / "c.toml").write_text(dump_toml(cfg))
    assert load_config(tmp_path / "c.toml") == cfg


def test_unknown_key_names_the_key_and_the_closest_valid_one() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'run.stepz'; did you mean 'steps'"):
        load_config(_cfg(run={"stepz": 3}))
    with pytest.raises(ConfigError, match=r"'methods.0.compresor'.*'compressor'"):
        load_config({"methods": [{"algorithm": "ef21", "compresor": "topk"}]})
    with pytest.raises(ConfigError, match=r"unknown config key 'problme'.*'problem'"):
        load_config(_cfg(problme={}))


def test_wrong_types_and_missing_pieces() -> None:
    with pytest.raises(ConfigError, match="run.steps' must be int"):
        load_config(_cfg(run={"steps": "many"}))
    with pytest.raises(ConfigError, match="no \\[\\[methods\\]\\]"):
        load_config({"name": "x"})
    with pytest.raises(ConfigError, match="missing required key.*algorithm"):
        load_config({"methods": [{"lr": 0.1}]})
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/config.toml")


def test_overrides() -> None:
    raw = _cfg()
    apply_override(raw, "run.steps=7")
    apply_override(raw, "methods.0.lr_multiplier=16")
    apply_override(raw, "methods.0.compressor={kind = 'topk', ratio = 0.5}")
    apply_override(raw, "problem.dataset=a9a")
    cfg = load_config(raw)
    assert cfg.run.steps == 7 and cfg.methods[0].lr_multiplier == 16.0
    assert cfg.methods[0].compressor == {"kind": "topk", "ratio": 0.5}
    assert cfg.problem.dataset == "a9a"
    assert parse_value("true") is True and parse_value("w8a") == "w8a"
    with pytest.raises(ConfigError, match="key=value"):
        apply_override(raw, "run.steps")
    with pytest.raises(ConfigError, match="no entry"):
        apply_override(raw, "methods.5.lr=1")


def test_method_checks() -> None:
    with pytest.raises(ConfigError, match="did you mean 'ef21'"):
        build_algorithm(load_config({"methods": [{"algorithm": "ef2l"}]}).methods[0])
    with pytest.raises(ConfigError, match="takes no compressor"):
        build_algorithm(load_config({"methods": [{"algorithm": "gd",
                                                  "compressor": "topk"}]}).methods[0])
    with pytest.raises(ConfigError, match="needs batch_size"):
        build_algorithm(load_config({"methods": [{"algorithm": "ef21_sgd"}]}).methods[0])
    with pytest.raises(ConfigError, match="unknown compressor 'topx'.*'topk'"):
        build_algorithm(load_config({"methods": [{"algorithm": "ef",
                                                  "compressor": "topx"}]}).methods[0])
    alg = build_algorithm(load_config({"methods": [{"algorithm": "ef21", "compressor": {
        "kind": "topk", "k": 40}}]}).methods[0])
    with pytest.raises(ConfigError, match="k=40 exceeds the vector length d=30"):
        alg.check(30)


class _FakeComm:
    def __init__(self, size: int) -> None:
        self.size = size

    def Get_size(self) -> int:  # noqa: N802 (mpi4py's name)
        return self.size


def test_world_size_must_fit_the_config() -> None:
    cfg = load_config(_cfg(run={"workers": 3}))
    assert check_world(cfg, _FakeComm(3)) == 3
    with pytest.raises(LaunchError, match="run.workers = 3.*4 rank.*mpiexec -n 3"):
        check_world(cfg, _FakeComm(4))
    ded = load_config(_cfg(run={"workers": 3, "master": "dedicated"}))
    assert check_world(ded, _FakeComm(4)) == 3
    with pytest.raises(LaunchError, match="at least 2"):
        check_world(load_config(_cfg(run={"master": "dedicated"})), _FakeComm(1))


@pytest.mark.parametrize("method,message", [
    ({"algorithm": "dcgd", "compressor": "topk"}, "TopK needs exactly one of k or ratio"),
    ({"algorithm": "dcgd", "compressor": {"kind": "topk", "k": 1}},
     "dcgd needs an unbiased compressor"),
    ({"algorithm": "ef21", "compressor": {"kind": "topk", "k": 31}},
     "k=31 exceeds the vector length d=30"),
    ({"algorithm": "ef", "compressor": {"kind": "qsgd", "levels": 4}}, "wrap it as Scaled"),
])
def test_every_method_is_checked_against_the_model_before_any_runs(method, message) -> None:
    from decomp.runner import simulate_config

    cfg = load_config({"problem": {"scale": "standard"}, "run": {"steps": 3},
                       "methods": [{"algorithm": "gd"}, method]})
    with pytest.raises(ConfigError, match=message):
        simulate_config(cfg, 2)
