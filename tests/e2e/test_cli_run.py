"""`decomp run` end to end under mpiexec: outputs, convergence, failures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, run_cli

A9A_EF21 = """
name = "a9a-ef21"
[problem]
dataset = "a9a"
[run]
steps = 1000
log_every = 100
[[methods]]
name = "EF21 top-1"
algorithm = "ef21"
compressor = {{ kind = "topk", k = 1 }}
lr = "theory"
lr_multiplier = 16
"""


def _metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ef21_top1_on_a9a_reduces_grad_norm_100x(tmp_path: Path, data_dir: Path) -> None:
    cfg = tmp_path / "a9a.toml"
    cfg.write_text(A9A_EF21.format())
    r = run_cli(["run", str(cfg), "--out", str(tmp_path / "runs"), "--data-dir", str(data_dir)],
                np=4)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "runs" / "a9a-ef21"
    rows = _metrics(out / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(0, 1001, 100))
    assert rows[-1]["grad_norm_sq"] <= rows[0]["grad_norm_sq"] / 100
    assert set(rows[0]) >= {"step", "loss", "grad_norm_sq", "bits_up", "bits_down", "wall_s"}
    # Top-1 of d = 123 in float64: 16-byte header + 8-byte value + 2-byte index per message
    assert rows[-1]["bits_up"] == 8 * 26 * 1001
    summary = json.loads((out / "summary.json").read_text())["methods"]
    assert summary[0]["status"] == "ok" and summary[0]["steps"] == 1000
    assert "EF21 top-1" in r.stdout and "final ||grad f||^2" in r.stdout
    assert (out / "config.toml").is_file()


def test_demo_config_prints_the_comparison_table(tmp_path: Path) -> None:
    r = run_cli(["run", str(REPO / "jobs/configs/demo.toml"), "--out", str(tmp_path),
                 "--steps", "40"], np=4)
    assert r.returncode == 0, r.stderr
    for label in ("GD (dense allreduce)", "EF (top-1)", "EF21 (top-1)", "bits up/worker"):
        assert label in r.stdout
    rows = _metrics(tmp_path / "demo" / "metrics.jsonl")
    assert {row["method"] for row in rows} == {"GD (dense allreduce)", "EF (top-1)",
                                               "EF21 (top-1)"}


def test_one_failing_rank_ends_the_whole_job_fast(tmp_path: Path, startup_s: float) -> None:
    limit = 10 + 4 * startup_s  # 4 ranks' start-up and the abort; a rank left waiting: never
    t0 = time.monotonic()
    r = run_cli(["run", str(REPO / "jobs/configs/demo.toml"), "--out", str(tmp_path),
                 "--set", "run.fail_rank=2", "--set", "run.fail_step=5"], np=4,
                timeout=limit + 30)
    elapsed = time.monotonic() - t0
    assert r.returncode != 0
    assert elapsed < limit, (f"job took {elapsed:.1f} s to end after one rank failed "
                             f"(start-up {startup_s:.1f} s)")
    assert "[rank 2] ERROR" in r.stderr and "injected failure" in r.stderr


def test_config_typo_is_a_clear_error(tmp_path: Path) -> None:
    r = run_cli(["run", str(REPO / "jobs/configs/demo.toml"), "--out", str(tmp_path),
                 "--set", "run.stepz=3"], np=2, timeout=60)
    assert r.returncode != 0
    assert "unknown config key 'run.stepz'; did you mean 'steps'?" in r.stderr


def test_rank_count_the_config_cannot_use(tmp_path: Path) -> None:
    r = run_cli(["run", str(REPO / "jobs/configs/demo.toml"), "--out", str(tmp_path),
                 "--set", "run.workers=3"], np=2, timeout=60)
    assert r.returncode != 0
    assert "run.workers = 3" in r.stderr and "mpiexec -n 3" in r.stderr


def test_missing_dataset(tmp_path: Path) -> None:
    r = run_cli(["run", str(REPO / "jobs/configs/demo.toml"), "--out", str(tmp_path),
                 "--set", "problem.dataset=no_such_set", "--data-dir", str(tmp_path)], np=2,
                timeout=60)
    assert r.returncode != 0
    assert "dataset 'no_such_set' not found" in r.stderr


def test_divergence_is_reported_with_step_and_metrics_kept(tmp_path: Path) -> None:
    cfg = tmp_path / "div.toml"
    cfg.write_text("""
name = "div"
[problem]
kind = "least_squares"
dataset = "synthetic"
[run]
steps = 500
log_every = 5
[[methods]]
algorithm = "ef21"
compressor = { kind = "topk", k = 2 }
lr = 50.0
""")
    r = run_cli(["run", str(cfg), "--out", str(tmp_path)], np=2, timeout=60)
    assert r.returncode == 3, r.stderr
    assert "diverged" in r.stderr and "at step" in r.stderr
    summary = json.loads((tmp_path / "div" / "summary.json").read_text())["methods"]
    assert summary[0]["status"] == "diverged" and "TopK(k=2)" in summary[0]["message"]
    assert len(_metrics(tmp_path / "div" / "metrics.jsonl")) >= 1


def test_info_reports_mpi_and_ranks() -> None:
    r = run_cli(["info"], np=2, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "MPI library" in r.stdout and "ranks        2" in r.stdout


def test_sim_matches_run_on_the_same_config(tmp_path: Path) -> None:
    args = [str(REPO / "jobs/configs/demo.toml"), "--set", "run.steps=30"]
    sim = run_cli(["sim", *args, "--workers", "2"])
    run = run_cli(["run", *args, "--out", str(tmp_path)], np=2)
    assert sim.returncode == 0 and run.returncode == 0, sim.stderr + run.stderr
    def columns(out: str) -> list[tuple[str, ...]]:
        # "... <||grad f||^2> <bits up> <unit> <bits down> <unit> <wall> s <status>"
        rows = [line.split() for line in out.splitlines() if "top-1" in line]
        return [(r[-8], r[-7], r[-6], r[-5], r[-4]) for r in rows]

    pick, got = columns(sim.stdout), columns(run.stdout)
    assert len(pick) == 2 and pick == got  # same ||grad f||^2 and bits to the printed digits
    assert all(float(row[0]) > 0 for row in pick)


@pytest.mark.parametrize("argv", [["run"], ["frobnicate"]])
def test_usage_errors(argv: list[str]) -> None:
    r = run_cli(argv, timeout=60)
    assert r.returncode == 2
