"""End to end on a real SLURM: the local single-node one that `make test-slurm`
(jobs/local/slurm-test/test.sh) stands up and tears down. Jobs are submitted the way a user does,
with `decomp slurm ... --submit`, and every wait is bounded.

Skipped unless DECOMP_SLURM_UP=1 (set by that script once SLURM answers), so `make test-e2e`
does not need a SLURM.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from decomp.launch import fnv1a_32
from tests.conftest import libsvm_dir
from tests.e2e.conftest import BIN, REPO

pytestmark = pytest.mark.skipif(
    os.environ.get("DECOMP_SLURM_UP") != "1",
    reason="needs the local SLURM: `make test-slurm` (root) stands one up and runs these")

EF21 = REPO / "jobs" / "configs" / "ef21_a9a.toml"
WAIT_S = 120
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


@pytest.fixture(scope="module", autouse=True)
def slurm_answers() -> None:
    """DECOMP_SLURM_UP=1 promises a SLURM: fail (not skip) when it does not answer."""
    if shutil.which("sbatch") is None:
        pytest.fail("DECOMP_SLURM_UP=1 but sbatch is not on PATH")
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip(), f"sinfo: {r.stderr}"


@dataclass
class Pace:
    """This machine's pace now (load included): a straight `mpiexec -n 4 decomp run` of the
    EF21 config for STEPS steps, split into start-up (imports, MPI_Init, data, compilation,
    exit) and stepping. The tests' limits follow it instead of a fixed guess."""

    STEPS = 2000
    total_s: float
    step_s: float  # the method's wall time for STEPS steps
    metrics: Path

    @property
    def startup_s(self) -> float:
        return max(self.total_s - self.step_s, 1.0)

    def run_limit(self, steps: int) -> float:
        """A generous bound on a job of `steps` steps once it runs: 8x the measured pace (the
        load may grow after the measurement: 4x was nearly used up once, at load 14)."""
        return 120 + 8 * (self.startup_s + self.step_s * steps / self.STEPS)

    @property
    def start_timeout_s(self) -> float:
        """DECOMP_START_TIMEOUT_S for the jobs: a hung MPI start-up fails, not the test."""
        return max(60.0, 4 * self.startup_s)


@pytest.fixture(scope="module")
def pace(tmp_path_factory: pytest.TempPathFactory) -> Pace:
    out = tmp_path_factory.mktemp("straight")
    data_dir = libsvm_dir()
    env = dict(os.environ, OMP_NUM_THREADS="1", DECOMP_PROGRESS="0")
    t0 = time.monotonic()
    r = subprocess.run([str(BIN / "mpiexec"), "-n", "4", str(BIN / "decomp"), "run", str(EF21),
                        "--out", str(out), "--data-dir", str(data_dir),
                        "--steps", str(Pace.STEPS)],
                       capture_output=True, text=True, timeout=600, env=env)
    total = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    rows = metrics(out / "ef21-a9a" / "metrics.jsonl")
    p = Pace(total_s=total, step_s=rows[-1]["wall_s"], metrics=out / "ef21-a9a" / "metrics.jsonl")
    print(f"\npace: {Pace.STEPS} steps in {p.step_s:.1f} s, start-up and exit {p.startup_s:.1f} s")
    return p


def decomp_slurm(out_dir: Path, data_dir: Path, *args: str, time_limit: str = "00:05:00",
                 env: dict[str, str] | None = None) -> tuple[str, str]:
    """`decomp slurm EF21 ARGS --submit` -> (job id, decomp slurm's output). The job inherits
    the environment (sbatch --export=ALL), with ``env`` added."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    r = subprocess.run([str(BIN / "decomp"), "slurm", str(EF21), "--out", str(out_dir),
                        "--data-dir", str(data_dir), "--time", time_limit, *args, "--submit"],
                       capture_output=True, text=True, timeout=60, env=env, cwd=out_dir.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"^submitted batch job (\d+);", r.stdout, re.MULTILINE)
    assert m, r.stdout
    return m[1], r.stdout


def job_records(job_id: str) -> list[dict[str, str]]:
    """`scontrol show job -o ID`: one record per job (per array task for an array)."""
    r = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in r.stdout.splitlines() if line]


def job_logs(out_dir: Path, job_id: str) -> str:
    """The text of the job's log files (one per array task)."""
    return "\n".join(p.read_text() for p in sorted((out_dir / "slurm").glob(f"*-{job_id}*.out")))


def wait_for(job_id: str, out_dir: Path, timeout: float = WAIT_S) -> list[dict[str, str]]:
    """Poll until every record of the job is in a final state; cancel and fail after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = job_records(job_id)
        if recs and all(r.get("JobState") in TERMINAL for r in recs):
            return recs
        time.sleep(0.5)
    subprocess.run(["scancel", job_id], timeout=30, check=False)
    pytest.fail(f"job {job_id} not finished after {timeout} s: {job_records(job_id)}\n"
                f"{job_logs(out_dir, job_id)}")


def run_job(tmp_path: Path, data_dir: Path, *args: str, timeout: float = WAIT_S
            ) -> tuple[str, str, list[dict[str, str]], Path]:
    """Submit with `decomp slurm --submit`, wait; (job id, decomp slurm output, records, out).

    Run once: the MPI_Init failures once retried here ("UCX ERROR failed to unpack address",
    "Message truncated ... MPIDI_UCX_comm_set_vcis") came from a killed earlier job's
    /dev/shm/mpich_shm_<hash(job id.step)> segment, which a later job of the same id opened
    (the local SLURM numbers jobs from 1 again after a stand-up); the templates now remove
    their job's segments before srun (docs/reliability.md, "MPI state a killed run leaves
    behind"), so a failure here is a failure."""
    out_dir = tmp_path / "runs"
    job, out = decomp_slurm(out_dir, data_dir, *args)
    recs = wait_for(job, out_dir, timeout)
    return job, out, recs, out_dir


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ef21_template_with_4_tasks(tmp_path: Path, data_dir: Path, pace: Pace) -> None:
    t0 = time.monotonic()
    job, out, [rec], runs = run_job(tmp_path, data_dir, "--nodes", "1", "--ntasks-per-node", "4",
                                    "--steps", "1000", timeout=max(WAIT_S, pace.run_limit(1000)))
    elapsed = time.monotonic() - t0
    log = runs / "slurm" / f"decomp-ef21-a9a-{job}.out"
    assert f"log {log}" in out
    text = log.read_text()
    print(f"\n--- sbatch job {job}: {rec['JobState']} {rec['ExitCode']} in {rec['RunTime']} "
          f"(submit to end {elapsed:.1f} s) ---\n{text}")
    assert (rec["JobState"], rec["ExitCode"]) == ("COMPLETED", "0:0"), text
    assert rec["NumTasks"] == "4" and rec["NumNodes"] == "1"
    assert f"launch: SLURM job {job} on 1 node(s) [localhost], 4 task(s), step 0 runs 4 task(s)" \
        in text
    assert "launch: MPI world of 4 rank(s) on 1 node(s)" in text
    assert "launcher: srun --mpi=pmi2" in text and "launch: MPI library: MPICH" in text
    assert f"decomp job {job}: exit status 0" in text
    out_dir = runs / "ef21-a9a"
    rows = metrics(out_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(0, 1001, 100))
    assert rows[-1]["grad_norm_sq"] <= rows[0]["grad_norm_sq"] / 100
    summary = json.loads((out_dir / "summary.json").read_text())["methods"]
    assert summary[0]["status"] == "ok" and summary[0]["steps"] == 1000


def test_sweep_as_a_2_task_job_array(tmp_path: Path, data_dir: Path, pace: Pace) -> None:
    # the two array tasks may run one after the other: twice one run's limit
    job, out, recs, runs = run_job(tmp_path, data_dir, "--ntasks-per-node", "2", "--steps", "200",
                                   "--sweep", "methods.0.lr_multiplier=[4, 16]",
                                   timeout=max(WAIT_S, 2 * pace.run_limit(200)))
    assert "task 0: methods.0.lr_multiplier=4" in out and "task 1: methods.0.lr_multiplier=16" \
        in out
    text = job_logs(runs, job)
    assert sorted(r["ArrayTaskId"] for r in recs) == ["0", "1"], recs
    assert all((r["JobState"], r["ExitCode"]) == ("COMPLETED", "0:0") for r in recs), text
    finals = []
    # a --sweep grid gets its own name (the config's name, "-sweep", a digest of the grid)
    [sweep_dir] = [p for p in runs.glob("ef21-a9a-sweep-*") if p.is_dir()]
    for task, mult in ((0, 4.0), (1, 16.0)):
        task_dir = sweep_dir / str(task)
        assert f"lr_multiplier = {mult}" in (task_dir / "config.toml").read_text()
        rows = metrics(task_dir / "metrics.jsonl")
        assert rows[-1]["step"] == 200
        finals.append(rows[-1]["grad_norm_sq"])
        log = runs / "slurm" / f"decomp-{sweep_dir.name}-{job}_{task}.out"
        assert f"(array {job}, task {task})" in log.read_text()
    assert finals[1] < finals[0]  # the larger step converges faster here


def test_srun_without_pmi_fails_with_a_clear_message(tmp_path: Path, data_dir: Path,
                                                      pace: Pace) -> None:
    job, out, [rec], runs = run_job(tmp_path, data_dir, "--ntasks-per-node", "4", "--mpi", "none",
                                    timeout=pace.run_limit(0))
    assert "warning: --mpi none" in out
    text = (runs / "slurm" / f"decomp-ef21-a9a-{job}.out").read_text()
    assert "+ srun --mpi=none --kill-on-bad-exit=1 decomp run" in text
    assert rec["JobState"] == "FAILED" and rec["ExitCode"] != "0:0", (rec, text)
    # every copy that reaches the check says why (--kill-on-bad-exit may end the others first)
    said = re.findall(r"\[rank 0\] ERROR: SLURM task (\d): SLURM started 4 tasks in step 0 of "
                      rf"job {job}, but MPI sees a world of 1 rank", text)
    assert said and set(said) <= {"0", "1", "2", "3"}, text
    assert "Launch with `srun --mpi=pmi2 decomp run ...`" in text
    assert "INFO problem" not in text
    assert not (runs / "ef21-a9a").exists()


def test_mpiexec_inside_the_allocation(tmp_path: Path, data_dir: Path, pace: Pace) -> None:
    job, _, [rec], runs = run_job(tmp_path, data_dir, "--ntasks-per-node", "2", "--launcher",
                                  "mpiexec", "--steps", "100",
                                  timeout=max(WAIT_S, pace.run_limit(100)))
    text = (runs / "slurm" / f"decomp-ef21-a9a-{job}.out").read_text()
    assert (rec["JobState"], rec["ExitCode"]) == ("COMPLETED", "0:0"), text
    assert "+ mpiexec -n 2 decomp run" in text
    assert "launch: MPI world of 2 rank(s) on 1 node(s)" in text
    assert "launcher: mpiexec (MPICH Hydra)" in text
    assert metrics(runs / "ef21-a9a" / "metrics.jsonl")[-1]["step"] == 100


def time_limit(seconds: float) -> str:
    """An sbatch --time of at least ``seconds`` plus the templates' USR1 notice (120 s)."""
    minutes = math.ceil((seconds + 120) / 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def wait_until(what: str, job: str, out_dir: Path, timeout: float, done) -> dict[str, str]:
    """Poll the job's record until ``done(record)``; cancel and fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [rec] = job_records(job)
        if done(rec):
            return rec
        time.sleep(0.5)
    subprocess.run(["scancel", job], timeout=30, check=False)
    pytest.fail(f"job {job}: {what} not within {timeout:.0f} s: {job_records(job)}\n"
                f"{job_logs(out_dir, job)}")


@pytest.mark.timeout(1800)
def test_a_requeued_job_resumes_to_the_uninterrupted_result(tmp_path: Path, data_dir: Path,
                                                             pace: Pace) -> None:
    """`scontrol requeue` in the middle of a run: the ranks get SIGTERM, checkpoint and exit
    143; SLURM runs the job again (SLURM_RESTART_COUNT=1) once its requeue delay has passed
    (cred_expire + 1 s, 11 s in the local SLURM), the template removes MPI shared memory left by the
    first run and adds --resume auto, and the job completes with metrics identical to an
    uninterrupted run. Every limit follows the measured pace (the `pace` fixture)."""
    steps = Pace.STEPS
    out_dir = tmp_path / "requeue"
    job, _ = decomp_slurm(out_dir, data_dir, "--nodes", "1", "--ntasks-per-node", "4",
                          "--steps", str(steps), "--set", "run.checkpoint_every=100",
                          time_limit=time_limit(600 + 2 * pace.run_limit(steps)),
                          env={"DECOMP_START_TIMEOUT_S": f"{pace.start_timeout_s:.0f}"})
    metrics_file = out_dir / "ef21-a9a" / "metrics.jsonl"
    limit = max(WAIT_S, pace.run_limit(300))
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:  # inside the step loop: a few rows logged
        if metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= 4:
            break
        time.sleep(0.2)
    else:
        subprocess.run(["scancel", job], timeout=30, check=False)
        pytest.fail(f"job {job} logged no metrics in {limit:.0f} s\n{job_logs(out_dir, job)}")
    [first] = job_records(job)
    r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    t_requeue = time.monotonic()
    # SLURM's part: the first run ends (KillWait 30 s at most), the requeue delay passes, the
    # scheduler starts it again (its next pass: every second in the local SLURM)
    wait_until("no second start", job, out_dir, 300,
               lambda rec: rec.get("Restarts") == "1" and rec.get("JobState") in
               TERMINAL | {"RUNNING"} and rec.get("StartTime") != first["StartTime"])
    t_restart = time.monotonic()
    rec = wait_until("the requeued run did not finish", job, out_dir, pace.run_limit(steps),
                     lambda rec: rec.get("JobState") in TERMINAL)
    log = job_logs(out_dir, job)
    print(f"\n--- requeued job {job}: {rec['JobState']} {rec['ExitCode']}; started again "
          f"{t_restart - t_requeue:.0f} s after the requeue, ran {time.monotonic() - t_restart:.0f}"
          f" s ---\n{log}")
    assert (rec["Restarts"], rec["JobState"], rec["ExitCode"]) == ("1", "COMPLETED", "0:0"), log
    assert "resumed from its checkpoint at step" in log

    def rows(path: Path) -> list[dict]:
        return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in metrics(path)]

    assert rows(metrics_file) == rows(pace.metrics)


#: the size of MPICH 5.0's start-up segment for 4 local ranks (seen in /dev/shm)
SEGMENT_4_RANKS = 4233472


def plant_segment(job: str, *, mtime: float) -> Path:
    """A zeroed MPICH start-up segment under the name step 0 of ``job`` will use, as ranks
    killed before MPI_Finalize leave it (their flags aside: zeros make MPI_Init wait forever
    for a creator that never comes; a killed run's contents make it abort or hang)."""
    path = Path("/dev/shm") / f"mpich_shm_{fnv1a_32(f'{job}.0'):x}_0"
    path.write_bytes(bytes(SEGMENT_4_RANKS))
    os.utime(path, (mtime, mtime))
    return path


def held_job(tmp_path: Path, data_dir: Path, pace: Pace, *args: str) -> tuple[str, Path]:
    """A held 4-task EF21 job of 100 steps by `decomp slurm --submit` (job id, out dir)."""
    out_dir = tmp_path / "runs"
    job, _ = decomp_slurm(out_dir, data_dir, "--ntasks-per-node", "4", "--steps", "100",
                          "--sbatch=--hold", *args,
                          env={"DECOMP_START_TIMEOUT_S": f"{pace.start_timeout_s:.0f}"})
    return job, out_dir


def test_a_job_removes_the_mpi_shared_memory_an_earlier_run_left(tmp_path: Path,
                                                                  data_dir: Path,
                                                                  pace: Pace) -> None:
    """What made the requeued job hang or abort in MPI_Init: a segment of its job id and step
    left in /dev/shm. The job script removes it before srun, and the job completes."""
    job, out_dir = held_job(tmp_path, data_dir, pace)
    seg = plant_segment(job, mtime=time.time() + 3600)  # "fresh": the ranks' check passes it
    try:
        subprocess.run(["scontrol", "release", job], check=True, timeout=30)
        [rec] = wait_for(job, out_dir, WAIT_S + pace.run_limit(100))
    finally:
        seg.unlink(missing_ok=True)
    log = job_logs(out_dir, job)
    assert (rec["JobState"], rec["ExitCode"]) == ("COMPLETED", "0:0"), log
    assert f"decomp job {job}: removing {seg} (left by an earlier run)" in log


@pytest.mark.parametrize("age", ["old", "new"])
def test_srun_with_stale_shared_memory_fails_fast_with_a_message(tmp_path: Path,
                                                                 data_dir: Path, pace: Pace,
                                                                 age: str) -> None:
    """Without the job script's clean-up (srun started by hand): a segment older than the
    step is refused before MPI_Init; one that looks new hangs MPI_Init, and the start-up
    deadline ends the ranks with a message. Either way the job fails, in bounded time."""
    out_dir = tmp_path / "runs"
    (out_dir / "slurm").mkdir(parents=True)
    # "new": MPI_Init waits forever for the zeroed segment's creator, so the deadline may be
    # short (it ends a start-up that would never finish; the old case is refused before it)
    timeout_s = 8 if age == "new" else pace.start_timeout_s
    r = subprocess.run(
        ["sbatch", "--parsable", "--hold", "-n", "4", "-t", time_limit(600),
         "-o", str(out_dir / "slurm" / "stale-%j.out"),
         "--export", f"ALL,DECOMP_START_TIMEOUT_S={timeout_s:.0f},DECOMP_PROGRESS=0",
         "--wrap", f"srun --mpi=pmi2 --kill-on-bad-exit=1 {BIN / 'decomp'} run {EF21} "
                   f"--out {out_dir} --data-dir {data_dir} --steps 100"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip()
    seg = plant_segment(job, mtime=time.time() + (3600 if age == "new" else -3600))
    try:
        subprocess.run(["scontrol", "release", job], check=True, timeout=30)
        [rec] = wait_for(job, out_dir, WAIT_S + timeout_s + pace.startup_s)
    finally:
        seg.unlink(missing_ok=True)
    log = job_logs(out_dir, job)
    assert rec["JobState"] == "FAILED", log
    if age == "old":
        assert f"ERROR: MPI start-up would hang: {seg} is MPICH's start-up shared memory for " \
               f"PMI job {job}.0 (SLURM job {job}, step 0)" in log
    else:  # MPI_Init waits for the segment's creator; another MPICH may abort instead
        assert "ERROR: MPI start-up (MPI_Init and the first collective) has not finished " \
               f"after {timeout_s} s: ending this rank" in log \
               or "Fatal error in internal_Init_thread" in log, log
    assert not (out_dir / "ef21-a9a").exists()
