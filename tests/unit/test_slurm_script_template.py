"""jobs/slurm/script/torch_script.sbatch (a user's own training script on SLURM) run with fake
srun/mpiexec/scontrol: the launch line, the script given as sbatch's argument, threads, and the
requeue after the ranks exit 138 (SIGUSR1: the time limit is near). The real job and requeue:
tests/e2e/test_slurm_torch.py (make test-slurm)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from decomp.slurm import sbatch_options, script_variable

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "jobs" / "slurm" / "script" / "torch_script.sbatch"
FAKE_JOB = "99999998"  # above SLURM's MaxJobId: the /dev/shm clean-up never meets a real job's


def _run(tmp_path: Path, *args: str, exit_code: int = 0, launcher: str = "srun",
         **env: str) -> str:
    fake = tmp_path / "fakebin"
    fake.mkdir(exist_ok=True)
    for name in ("srun", "mpiexec"):
        (fake / name).write_text('#!/bin/bash\necho "LAUNCH $(basename "$0") $* | '
                                 f'OMP=$OMP_NUM_THREADS"\nexit {exit_code}\n')
    (fake / "scontrol").write_text('#!/bin/bash\necho "SCONTROL $*"\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    full = {"PATH": f"{fake}:/usr/bin:/bin", "SLURM_JOB_ID": FAKE_JOB, "SLURM_NTASKS": "4",
            "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "n1",
            "SLURM_CPUS_PER_TASK": "2", **env}
    text = TEMPLATE.read_text().replace("VENV=.venv ", "VENV= ")  # a user edits the settings
    text = text.replace("LAUNCHER=srun ", f"LAUNCHER={launcher} ")
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    r = subprocess.run(["bash", str(script), *args], env=full, capture_output=True, text=True,
                       timeout=30, cwd=tmp_path)
    assert r.returncode == exit_code, r.stdout + r.stderr
    return r.stdout


def test_the_template_is_a_complete_job_script() -> None:
    text = TEMPLATE.read_text()
    assert subprocess.run(["bash", "-n", str(TEMPLATE)]).returncode == 0
    opts = sbatch_options(text)
    assert (opts["signal"], opts["requeue"], opts["open-mode"]) == ("B:USR1@120", "", "append")
    for var in ("SCRIPT", "SCRIPT_ARGS", "PYTHON", "VENV", "MODULES", "LAUNCHER", "SRUN_MPI"):
        assert script_variable(text, var) is not None, var


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_it_launches_the_script_on_every_task(tmp_path: Path, launcher: str) -> None:
    out = _run(tmp_path, "train.py", "--epochs", "3", launcher=launcher)
    head = ("LAUNCH srun --mpi=pmi2 --kill-on-bad-exit=1" if launcher == "srun"
            else "LAUNCH mpiexec -n 4")
    assert f"{head} python train.py --epochs 3 | OMP=2" in out
    assert "start 1;" in out and "exit status 0" in out and "SCONTROL" not in out


def test_exit_138_after_usr1_requeues_the_job(tmp_path: Path) -> None:
    out = _run(tmp_path, "train.py", exit_code=138, SLURM_RESTART_COUNT="1")
    assert f"SCONTROL requeue {FAKE_JOB}" in out and f"decomp job {FAKE_JOB}: requeued" in out
    assert "start 2;" in out and "exit status 138" in out
