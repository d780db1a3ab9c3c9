"""`decomp run` with `run.aggregation = "tree"` under mpiexec against `decomp sim` of the same
config: every metric at every log step (loss, ‖∇f‖², bits up and down) agrees — the sums in
the tree's grouping, the per-rank subtree messages and the total's downlink counted alike —
for the methods on the tree (EF21 sparse and dense init, EF, DCGD with QSGD: dense sums) and
those that keep the master (EF21+, downlink = "model"); and a dedicated master with the tree
is refused naming the fix."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import run_cli
from tests.e2e.test_results_cli import COLUMNS, MIXED


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_run_on_the_tree_equals_sim(tmp_path: Path) -> None:
    cfg = tmp_path / "tree.toml"
    cfg.write_text(MIXED.format(master="shared").replace(
        'master = "shared"', 'master = "shared"\naggregation = "tree"'))
    r = run_cli(["run", str(cfg), "--out", str(tmp_path / "mpi")], np=4)
    s = run_cli(["sim", str(cfg), "--workers", "4", "--out", str(tmp_path / "sim")])
    assert r.returncode == 0 and s.returncode == 0, r.stderr + s.stderr
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
