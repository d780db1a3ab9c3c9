"""What a run resolved about its aggregation (issue 23): an explicit ``aggregation = "tree"``
for a method that sums at a master is refused before any work, naming the reason and the fix,
in a config and in the API both torch front ends go through; ``"auto"`` resolves per method
and ``decomp sim`` records what each method ran with; the node layout can be given to
``decomp sim`` in the process (``--node-layout``, text or a run folder's record) instead of
``DECOMP_NODE_LAYOUT``, and reads back exactly as :func:`decomp.comm.nodes.describe` writes
it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from decomp.algorithms import EF21, GD, EF21Plus
from decomp.algorithms.ef21_bc import EF21BC
from decomp.cli.sim import node_layout
from decomp.comm.nodes import count_env, describe, from_env, parse_layout, use_layout
from decomp.compress import TopK
from decomp.config import load_config
from decomp.errors import ConfigError
from decomp.runner import simulate_config
from decomp.runner.build import build_session, check_tree
from decomp.runner.plan import plan_methods

CONFIG = """name = "agg"
[problem]
dataset = "synthetic"
n_samples = 80
n_features = 12
[run]
steps = 3
log_every = 3
aggregation = "{agg}"
[[methods]]
name = "ef21"
algorithm = "ef21"
compressor = {{ kind = "topk", k = 2 }}
lr = 0.1
[[methods]]
name = "ef21+"
algorithm = "ef21_plus"
compressor = {{ kind = "topk", k = 2 }}
lr = 0.1
[[methods]]
name = "gd"
algorithm = "gd"
lr = 0.1
"""


def _config(tmp_path: Path, agg: str):
    p = tmp_path / f"{agg}.toml"
    p.write_text(CONFIG.format(agg=agg))
    return load_config(str(p), [f'out_dir="{tmp_path / "runs"}"'])


@pytest.mark.parametrize("alg", [EF21Plus(TopK(1)), EF21BC(TopK(1)),
                                 EF21(TopK(1), downlink="model")],
                         ids=["ef21_plus", "ef21_bc", "downlink_model"])
def test_an_explicit_tree_for_a_method_that_needs_the_master_is_refused(alg) -> None:
    with pytest.raises(ConfigError) as e:
        check_tree(alg, "tree")
    msg = str(e.value)
    assert alg.tree_refusal() in msg  # the reason, from the class's own declaration
    assert "aggregation='auto'" in msg and "aggregation='gather'" in msg  # and the fixes
    for ok in ("auto", "gather", None):
        check_tree(alg, ok)
    check_tree(EF21(TopK(1)), "tree")  # a method the tree can run
    check_tree(GD(), "tree")  # dense: all-reduce either way


def test_the_refusal_comes_before_any_work(tmp_path: Path) -> None:
    """In a config: at planning, before the data loads, naming the method; in the API
    (``build_session``, which DistributedOptimizer and Trainer call): before the transport
    opens and any data is shared."""
    with pytest.raises(ConfigError, match=r"ef\+?21\+?.*run.aggregation = 'tree' cannot run "
                       r"ef21_plus: .*run.aggregation = 'auto'.*run.aggregation = 'gather'"):
        plan_methods(_config(tmp_path, "tree"))
    with pytest.raises(ConfigError, match="aggregation='tree' cannot run EF21BC"):
        build_session(EF21BC(TopK(1)), problem=lambda w, n: None, lr=0.1, seed=0,
                      aggregation="tree")
    plan_methods(_config(tmp_path, "auto"))  # auto resolves per method instead


def test_trainer_refuses_an_explicit_tree_for_ef21_plus() -> None:
    pytest.importorskip("torch")
    from mpi4py import MPI
    from torch import nn

    import decomp
    from decomp.data.classification import load

    with pytest.raises(ConfigError, match="aggregation='tree' cannot run EF21Plus"):
        decomp.Trainer("mlp", nn.CrossEntropyLoss(), load("synthetic", n_samples=60,
                                                          n_features=5, n_classes=2),
                       algorithm=EF21Plus(TopK(1)), lr=0.1, batch_size=8, comm=MPI.COMM_SELF,
                       verbose=False, progress=False, aggregation="tree")


def test_sim_records_what_each_method_ran_with_under_a_given_layout(tmp_path: Path) -> None:
    """"auto" with every rank its own node (the emulated cluster's layout): EF21 on the
    tree, EF21+ keeps its gather, GD all-reduces; on one node (no layout) both gather. The
    summary records it, and the layout the sim was given."""
    cfg = _config(tmp_path, "auto")
    with use_layout("1"):
        rs = simulate_config(cfg, 4, write=True, mode="new")
    assert [r.aggregation for r in rs] == ["tree", "gather", "allreduce"]
    doc = json.loads((tmp_path / "runs" / "agg" / "summary.json").read_text())
    assert [m["aggregation"] for m in doc["methods"]] == ["tree", "gather", "allreduce"]
    assert (doc["run"]["nodes"], doc["run"]["node_layout"]) == (4, "1,1,1,1")
    rs = simulate_config(cfg, 4, write=False)
    assert [r.aggregation for r in rs] == ["gather", "gather", "allreduce"]


def test_the_layout_reads_back_from_a_run_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DECOMP_NODE_LAYOUT", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    for recorded in ("3,2,3", [[0, 2, 4], [1, 3], [5, 6, 7]]):
        (run / "summary.json").write_text(json.dumps({"run": {"node_layout": recorded}}))
        given = node_layout(str(run), 8)
        nodes = parse_layout(given, 8)
        assert describe(nodes) == recorded  # what decomp run writes, read back unchanged
        with use_layout(given):
            assert from_env(8) == nodes and count_env(8) == 3
    assert node_layout("4", 8) == "4" and node_layout(None, 8) is None
    with pytest.raises(ConfigError, match="add up to 7, but the run has 8"):
        node_layout("3,4", 8)
    with pytest.raises(ConfigError, match="ranks 0..7 once each"):
        node_layout_of(run, [[0, 1], [1, 2, 3, 4, 5, 6, 7]])
    (run / "summary.json").write_text(json.dumps({"run": {"engine": "sim"}}))
    with pytest.raises(ConfigError, match="records no node layout.*give the layout itself"):
        node_layout(str(run), 8)
    with pytest.raises(ConfigError, match="no run summary to read"):
        node_layout(str(tmp_path), 8)


def node_layout_of(run: Path, recorded: list[list[int]]):
    (run / "summary.json").write_text(json.dumps({"run": {"node_layout": recorded}}))
    return node_layout(str(run), 8)


def test_the_given_layout_wins_over_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("DECOMP_NODE_LAYOUT", "flat")
    assert from_env(6) is None and count_env(6) == 1
    with use_layout("2"):
        assert from_env(6) == ((0, 1), (2, 3), (4, 5)) and count_env(6) == 3
    assert count_env(6) == 1  # restored after the block
