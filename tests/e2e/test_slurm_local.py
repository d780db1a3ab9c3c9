"""Without a SLURM: `decomp run` refuses what looks like `srun --mpi=none` (SLURM's variables,
a one-rank world), and the jobs/local/ mpiexec scripts run as documented."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.e2e.conftest import BIN, REPO

SRUN_NO_PMI = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "4", "SLURM_STEP_ID": "0",
               "SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3", "SLURM_JOB_NUM_NODES": "1"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "PMIX_"))}
    return {**env, "OMP_NUM_THREADS": "1", "DECOMP_PROGRESS": "0", **extra}


def test_run_refuses_a_one_rank_world_in_a_four_task_srun_step(tmp_path: Path) -> None:
    r = subprocess.run([str(BIN / "decomp"), "run", str(REPO / "jobs/configs/demo.toml"),
                        "--out", str(tmp_path)], env=_env(**SRUN_NO_PMI), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert ("[rank 0] ERROR: SLURM task 3: SLURM started 4 tasks in step 0 of job 77, but MPI "
            "sees a world of 1 rank") in r.stderr
    assert "srun --mpi=pmi2" in r.stderr
    assert not (tmp_path / "demo").exists()  # refused before writing anything


def test_override_and_other_commands_are_not_refused(tmp_path: Path) -> None:
    r = subprocess.run([str(BIN / "decomp"), "run", str(REPO / "jobs/configs/demo.toml"),
                        "--out", str(tmp_path), "--steps", "5"],
                       env=_env(**SRUN_NO_PMI, DECOMP_ALLOW_SINGLETON="1"), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "DECOMP_ALLOW_SINGLETON=1: running one-rank copies" in r.stderr
    assert "launch: SLURM job 77 on 1 node(s), 4 task(s), step 0 runs 4 task(s)" in r.stderr
    info = subprocess.run([str(BIN / "decomp"), "info"], env=_env(**SRUN_NO_PMI),
                          capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr


def test_local_scripts_ef21_and_sweep(tmp_path: Path, data_dir: Path) -> None:
    env = _env(NP="2", OUT=str(tmp_path), DECOMP_DATA=str(data_dir))
    r = subprocess.run(["bash", str(REPO / "jobs/local/ef21.sh"),
                        str(REPO / "jobs/configs/ef21_a9a.toml"), "--steps", "30"], env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "launcher: mpiexec (MPICH Hydra)" in r.stderr
    rows = (tmp_path / "ef21-a9a" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(rows[-1])["step"] == 30
    r = subprocess.run(["bash", str(REPO / "jobs/local/sweep.sh"),
                        str(REPO / "jobs/configs/ef21_a9a_sweep.toml"), "--steps", "10"],
                       env={**env, "TASKS": "3"}, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "sweep ef21-a9a-sweep: 0 failed" in r.stdout
    cfg = (tmp_path / "ef21-a9a-sweep" / "3" / "config.toml").read_text()  # task 3: 16 x top-8
    assert "lr_multiplier = 16.0" in cfg and "k = 8" in cfg


def test_local_scripts_are_valid_bash() -> None:
    for script in sorted((REPO / "jobs/local").rglob("*.sh")):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
