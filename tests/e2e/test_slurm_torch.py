"""On the local SLURM of `make test-slurm`: a user's own training script
(tests/e2e/user_loop_script.py, ``decomp.torch.DistributedOptimizer`` in its loop) in
jobs/slurm/script/torch_script.sbatch survives `scontrol requeue` and ends with the result of an
uninterrupted run, bit for bit. Skipped unless DECOMP_SLURM_UP=1, as tests/e2e/test_slurm.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.e2e.conftest import REPO
from tests.e2e.test_slurm import (  # noqa: F401 (slurm_answers: the module's autouse check)
    TERMINAL,
    job_logs,
    job_records,
    slurm_answers,
    time_limit,
    wait_until,
)
from tests.e2e.test_torch_preemption import STEPS, finals, launch, rows

pytestmark = pytest.mark.skipif(
    os.environ.get("DECOMP_SLURM_UP") != "1",
    reason="needs the local SLURM: `make test-slurm` (root) stands one up and runs these")

TEMPLATE = REPO / "jobs" / "slurm" / "script" / "torch_script.sbatch"
SCRIPT = REPO / "tests" / "e2e" / "user_loop_script.py"
WAIT_S = 900  # a bound on each phase (a hang fails the test); the events decide, not the time


@pytest.mark.timeout(3600)
def test_a_requeued_user_script_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """Rank 1 of the job pauses after step 12 until a signal reaches it
    (tests/e2e/user_loop_script.py --pause-at); `scontrol requeue` sends SIGTERM to every rank:
    opt.should_stop() is true on every rank after step 13, every rank saves and exits 143, SLURM
    starts the job again, the script's opt.load(..., missing_ok=True) continues, and the final
    models and metrics rows equal those of an uninterrupted run (mpiexec, no SLURM)."""
    straight = tmp_path / "straight"
    straight.mkdir()
    r = launch(straight, "ef21")
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "requeue"
    (out / "slurm").mkdir(parents=True)
    sub = subprocess.run(
        ["sbatch", "--parsable", "--nodes", "1", "--ntasks-per-node", "4", "--cpus-per-task",
         "1", "--time", time_limit(2 * WAIT_S), "--output", str(out / "slurm" / "script-%j.out"),
         "--export", "ALL,OMP_NUM_THREADS=1", str(TEMPLATE), str(SCRIPT), str(out), "ef21",
         str(STEPS), "--pause-at", "12"],
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    deadline = time.monotonic() + WAIT_S
    while not (out / "pid").is_file():  # rank 1 paused after step 12
        [rec] = job_records(job)
        if rec.get("JobState") in TERMINAL or time.monotonic() > deadline:
            subprocess.run(["scancel", job], timeout=30, check=False)
            pytest.fail(f"job {job} never paused: {rec}\n{job_logs(out, job)}")
        time.sleep(0.2)
    [first] = job_records(job)
    r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    wait_until("no second start", job, out, WAIT_S,
               lambda rec: rec.get("Restarts") == "1" and rec.get("JobState") in
               TERMINAL | {"RUNNING"} and rec.get("StartTime") != first["StartTime"])
    rec = wait_until("the requeued run did not finish", job, out, WAIT_S,
                     lambda rec: rec.get("JobState") in TERMINAL)
    log = job_logs(out, job)
    print(f"\n--- requeued job {job}: {rec['JobState']} {rec['ExitCode']} ---\n{log}")
    assert (rec["Restarts"], rec["JobState"], rec["ExitCode"]) == ("1", "COMPLETED", "0:0"), log
    for r_ in range(4):
        assert f"rank {r_}: stopped by signal 15, saved at step 13" in log
        assert f"rank {r_}: resumed at step 13 (step 13)" in log
    assert f"+ srun --mpi=pmi2 --kill-on-bad-exit=1 python {SCRIPT}" in log
    for mine, theirs in zip(finals(out), finals(straight), strict=True):
        for k in mine:
            assert torch.equal(mine[k], theirs[k]), k
    assert rows(out) == rows(straight)
