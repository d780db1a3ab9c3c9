"""``plan_methods`` does not write into the config; the config a run writes records every
method's resolved options (the class defaults included)."""

from __future__ import annotations

import copy
from pathlib import Path

import tomllib

from decomp.config import dump_toml, load_config
from decomp.runner import plan_methods, simulate_config
from decomp.runner.plan import resolved_config


def _cfg(tmp_path: Path):
    return load_config({"name": "r", "out_dir": str(tmp_path), "run": {"steps": 2},
                        "methods": [{"algorithm": "ef21", "compressor": {"kind": "topk",
                                                                         "k": 2}},
                                    {"algorithm": "sgdm", "lr": 0.1, "batch_size": 8,
                                     "momentum": 0.5}]})


def test_plan_methods_leaves_the_config_alone(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    before = copy.deepcopy(cfg)
    plans = plan_methods(cfg)
    assert cfg == before
    assert plans[0].options == {"init": "compressed", "downlink": "compressed"}
    resolved = resolved_config(cfg, plans)
    assert resolved.methods[0].options == {"init": "compressed", "downlink": "compressed"}
    assert resolved.methods[1].options == {"momentum": 0.5, "nesterov": False}
    assert cfg == before  # a copy


def test_the_written_config_has_the_resolved_options(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    before = copy.deepcopy(cfg)
    simulate_config(cfg, 2, write=True)
    assert cfg == before
    written = tomllib.loads((tmp_path / "r" / "config.toml").read_text())
    assert written["methods"][0]["init"] == "compressed"
    assert written["methods"][1]["nesterov"] is False
    assert "init" not in dump_toml(cfg)  # the user's config as given
