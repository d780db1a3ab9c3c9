"""`decomp run` with `run.aggregation = "auto"` on two nodes of two ranks (DECOMP_NODE_LAYOUT)
under mpiexec against `decomp sim` of the same config told the layout by the run folder
(`--node-layout RUN_DIR`): every metric at every log step (loss, ‖∇f‖², bits up and down)
agrees — the sums in the node-aware tree's grouping, the per-rank subtree messages and the
total's downlink counted alike — for the methods on the tree (EF21 sparse and dense init, EF,
DCGD with QSGD: dense sums) and those that keep the master (EF21+, downlink = "model": "auto"
gathers them, and both summaries record what each method ran with); and a dedicated master
with the tree is refused naming the fix."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import run_cli
from tests.e2e.test_results_cli import COLUMNS, MIXED


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_run_on_the_tree_equals_sim(tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "tree.toml"
    cfg.write_text(MIXED.format(master="shared").replace(
        'master = "shared"', 'master = "shared"\naggregation = "auto"'))
    monkeypatch.setenv("DECOMP_NODE_LAYOUT", "2")
    r = run_cli(["run", str(cfg), "--out", str(tmp_path / "mpi")], np=4)
    monkeypatch.delenv("DECOMP_NODE_LAYOUT")
    s = run_cli(["sim", str(cfg), "--workers", "4", "--out", str(tmp_path / "sim"),
                 "--node-layout", str(tmp_path / "mpi" / "mix")])
    assert r.returncode == 0 and s.returncode == 0, r.stderr + s.stderr
    ran = ["tree", "gather", "tree", "gather", "allreduce", "tree"]  # MIXED's methods
    for where in ("mpi", "sim"):
        doc = json.loads((tmp_path / where / "mix" / "summary.json").read_text())
        assert [m["aggregation"] for m in doc["methods"]] == ran, where
        assert doc["run"]["node_layout"] == "2,2", where
    assert "4 ranks on 2 node(s), layout 2,2 (from DECOMP_NODE_LAYOUT)" in r.stderr + r.stdout
    mpi = _rows(tmp_path / "mpi" / "mix" / "metrics.jsonl")
    sim = _rows(tmp_path / "sim" / "mix" / "metrics.jsonl")
    assert len(mpi) == len(sim) == 6 * 4
    for a, b in zip(mpi, sim, strict=True):
        assert (a["method"], a["step"]) == (b["method"], b["step"])
        for col in COLUMNS:
            assert abs(a[col] - b[col]) <= 1e-12 * max(1.0, abs(a[col])), (a, b, col)


def test_a_dedicated_master_on_the_tree_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(MIXED.format(master="dedicated").replace(
        'master = "dedicated"', 'master = "dedicated"\naggregation = "tree"'))
    s = run_cli(["sim", str(cfg), "--workers", "3"])
    assert s.returncode != 0
    assert "use master = 'shared' with it" in s.stderr, s.stderr
