"""As a user sees it: ``mpiexec decomp run`` prints a plain progress line when stderr is a pipe
and records its run; ``decomp sim --out`` writes the same curve; ``decomp compare`` and
``decomp plot`` read both folders."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, _tool, run_cli

DEMO = REPO / "jobs" / "configs" / "demo.toml"
ARGS = [str(DEMO), "--steps", "30", "--set", "run.log_every=5"]
COLUMNS = ("loss", "grad_norm_sq", "bits_up", "bits_down", "consensus_distance")


def _rows(path: Path) -> list[dict]:
    return [json.loads(r) for r in path.read_text().splitlines()]


def test_progress_metadata_and_sim_curve_equal_to_the_mpi_run(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", DECOMP_PROGRESS="1", DECOMP_PROGRESS_EVERY="0")
    r = subprocess.run([_tool("mpiexec"), "-n", "2", _tool("decomp"), "run", *ARGS, "--out",
                        str(tmp_path / "mpi")], capture_output=True, text=True, timeout=240,
                       env=env, check=False)
    assert r.returncode == 0, r.stderr
    progress = [ln for ln in r.stderr.splitlines() if ln.startswith("[progress] ")]
    for label in ("GD (dense allreduce)", "EF (top-1)", "EF21 (top-1)"):
        mine = [ln for ln in progress if ln.startswith(f"[progress] {label}: ")]
        assert len(mine) == 30, progress[:3]  # every step at DECOMP_PROGRESS_EVERY=0
        assert mine[-1].startswith(f"[progress] {label}: step 30/30 (100%), ")
        assert "steps/s" in mine[-1] and "||grad f||^2" in mine[-1]
    summary = json.loads((tmp_path / "mpi" / "demo" / "summary.json").read_text())
    run = summary["run"]
    assert run["engine"] == "mpi" and run["world_size"] == 2 and run["n_workers"] == 2
    assert run["mpi_library"].startswith("MPICH") and run["hosts"]
    assert run["versions"]["mpi4py"] and "decomp run" in run["command"]
    assert [s["step_size"] for s in run["step_sizes"]] == [m["lr"] for m in summary["methods"]]

    s = run_cli(["sim", *ARGS, "--workers", "2", "--out", str(tmp_path / "sim")])
    assert s.returncode == 0, s.stderr
    mpi = _rows(tmp_path / "mpi" / "demo" / "metrics.jsonl")
    sim = _rows(tmp_path / "sim" / "demo" / "metrics.jsonl")
    assert [(x["method"], x["step"]) for x in sim] == [(x["method"], x["step"]) for x in mpi]
    assert len(sim) == 3 * 7  # steps 0, 5, ..., 30 for each method
    for a, b in zip(mpi, sim, strict=True):
        for col in COLUMNS:
            assert abs(a[col] - b[col]) <= 1e-12 * max(1.0, abs(a[col])), (a, b, col)

    c = run_cli(["compare", str(tmp_path / "mpi"), str(tmp_path / "sim"), "--csv", "-",
                 "--target", "grad_norm_sq=0.05"])
    assert c.returncode == 0, c.stderr
    table = list(csv.DictReader(io.StringIO(c.stdout)))
    assert len(table) == 6 and "steps to grad_norm_sq<=0.05" in table[0]
    assert all("engine=mpi" in row["method"] for row in table[:3])
    assert all("engine=sim" in row["method"] for row in table[3:])
    for row in table:  # the same final numbers from either engine's files
        twin = next(t for t in table if t is not row and t["method"].split(" [")[0]
                    == row["method"].split(" [")[0])
        assert float(row["grad_norm_sq"]) == pytest.approx(float(twin["grad_norm_sq"]),
                                                           rel=1e-12)
    fig = tmp_path / "both.png"
    p = run_cli(["plot", str(tmp_path / "mpi"), str(tmp_path / "sim"), "-x", "bits", "-o",
                 str(fig)])
    assert p.returncode == 0, p.stderr
    assert fig.stat().st_size > 20_000


MIXED = """name = "mix"
[problem]
dataset = "breast_cancer"
scale = "standard"
[run]
steps = 12
log_every = 4
master = "{master}"
[[methods]]
name = "ef21 full k8"
algorithm = "ef21"
compressor = {{ kind = "topk", k = 8 }}
init = "full"
lr = "theory"
[[methods]]
name = "ef21+"
algorithm = "ef21_plus"
compressor = {{ kind = "topk", k = 2 }}
lr = "theory"
[[methods]]
name = "dcgd qsgd"
algorithm = "dcgd"
compressor = {{ kind = "qsgd", levels = 3 }}
lr = 0.01
[[methods]]
name = "ef model downlink"
algorithm = "ef"
compressor = {{ kind = "topk", k = 3 }}
downlink = "model"
lr = "theory"
[[methods]]
name = "sgd"
algorithm = "sgd"
batch_size = 8
lr = 0.1
[[methods]]
name = "ef21-sgdm"
algorithm = "ef21_sgdm"
compressor = {{ kind = "topk", k = 4 }}
batch_size = 8
lr = 0.01
"""


def test_sim_counts_the_downlink_as_mpi_does(tmp_path: Path) -> None:
    """Compressed downlink (sparse union or dense sum), init sums, the dense model of EF21+ and
    downlink = "model", the all-reduce of SGD; shared and dedicated master: the reference's
    bits_up / bits_down at every log step are the MPI run's."""
    for master, np_ in (("shared", 3), ("dedicated", 4)):
        cfg = tmp_path / f"{master}.toml"
        cfg.write_text(MIXED.format(master=master))
        r = run_cli(["run", str(cfg), "--out", str(tmp_path / master / "mpi")], np=np_)
        s = run_cli(["sim", str(cfg), "--workers", "3", "--out", str(tmp_path / master / "sim")])
        assert r.returncode == 0 and s.returncode == 0, r.stderr + s.stderr
        mpi = _rows(tmp_path / master / "mpi" / "mix" / "metrics.jsonl")
        sim = _rows(tmp_path / master / "sim" / "mix" / "metrics.jsonl")
        assert len(mpi) == len(sim) == 6 * 4
        for a, b in zip(mpi, sim, strict=True):
            assert (a["method"], a["step"]) == (b["method"], b["step"])
            for col in COLUMNS:
                assert abs(a[col] - b[col]) <= 1e-12 * max(1.0, abs(a[col])), (a, b, col)
        down = {a["method"]: a["bits_down"] for a in mpi if a["step"] == 12}
        assert down["ef21 full k8"] < down["ef model downlink"]  # sparse sums beat the model
