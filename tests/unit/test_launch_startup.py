"""MPI start-up: shared memory that an earlier run of the same SLURM job left in /dev/shm is
found before MPI_Init (which it would hang); the start-up deadline's setting. End to end (a
`decomp run` whose MPI_Init hangs): tests/e2e/test_start_up.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from decomp.launch import (
    DEFAULT_START_TIMEOUT_S,
    fnv1a_32,
    mpich_segments,
    stale_start_state,
    start_timeout,
)

STEP = {"SLURM_JOB_ID": "1", "SLURM_STEP_ID": "0", "PMI_JOBID": "1.0", "PMI_RANK": "0"}


def test_the_world_id_is_mpichs_fnv1a_of_the_pmi_job_id() -> None:
    # /dev/shm/mpich_shm_eb421bf2_0 was the segment of SLURM job 1, step 0 (PMI_JOBID=1.0)
    assert f"{fnv1a_32('1.0'):x}" == "eb421bf2"
    assert fnv1a_32("") == 0x811C9DC5


def test_the_segments_of_a_world(tmp_path: Path, monkeypatch) -> None:
    import decomp.launch as launch

    # the step began a minute ago (not this test's real parent: pytest run in the background
    # is reparented to init, which began hours ago, and every segment would look new)
    monkeypatch.setattr(launch, "_started_at", lambda pid: time.time() - 60)
    ours = [tmp_path / f"mpich_shm_{fnv1a_32('1.0'):x}_0",
            tmp_path / f"mpich_vci_{fnv1a_32('1.0'):x}_0"]
    other = tmp_path / f"mpich_shm_{fnv1a_32('2.0'):x}_0"
    for path in (*ours, other):
        path.write_bytes(b"\0" * 64)
    assert mpich_segments("1.0", tmp_path) == sorted(ours)
    assert stale_start_state(STEP, tmp_path) is None  # just made: as if by a rank of this step
    hour_ago = time.time() - 3600
    for path in ours:
        os.utime(path, (hour_ago, hour_ago))
    problem = stale_start_state(STEP, tmp_path)
    assert problem is not None and f"{ours[0]}, {ours[1]} is MPICH's" in problem


def test_stale_means_older_than_the_process_that_started_the_task(tmp_path: Path,
                                                                  monkeypatch) -> None:
    import decomp.launch as launch

    seg = tmp_path / f"mpich_shm_{fnv1a_32('1.0'):x}_0"
    seg.write_bytes(b"\0" * 64)
    made_at = os.stat(seg).st_mtime
    monkeypatch.setattr(launch, "_started_at", lambda pid: made_at + 60)  # the step: later
    problem = stale_start_state(STEP, tmp_path)
    assert problem is not None and problem.startswith(f"MPI start-up would hang: {seg} is "
                                                      "MPICH's start-up shared memory for PMI "
                                                      "job 1.0 (SLURM job 1, step 0)")
    assert f"rm -f {tmp_path}/mpich_shm_eb421bf2_* {tmp_path}/mpich_vci_eb421bf2_*" in problem
    monkeypatch.setattr(launch, "_started_at", lambda pid: made_at - 60)  # the step: earlier
    assert stale_start_state(STEP, tmp_path) is None
    # not an srun task with PMI-2 (mpiexec, a singleton): nothing to check
    monkeypatch.setattr(launch, "_started_at", lambda pid: made_at + 60)
    assert stale_start_state({k: v for k, v in STEP.items() if k != "PMI_JOBID"},
                             tmp_path) is None
    assert stale_start_state({k: v for k, v in STEP.items() if k != "SLURM_STEP_ID"},
                             tmp_path) is None


def test_process_start_times_come_from_proc() -> None:
    from decomp.launch import _started_at

    me, parent = _started_at(os.getpid()), _started_at(os.getppid())
    if me is None:
        pytest.skip("no /proc")
    assert parent is not None and parent <= me + 1 and abs(me - time.time()) < 24 * 3600


@pytest.mark.parametrize("value, limit", [(None, DEFAULT_START_TIMEOUT_S), ("45", 45.0),
                                          ("0", 0.0), ("abc", DEFAULT_START_TIMEOUT_S),
                                          ("-3", DEFAULT_START_TIMEOUT_S)])
def test_start_timeout_from_the_environment(value: str | None, limit: float) -> None:
    env = {} if value is None else {"DECOMP_START_TIMEOUT_S": value}
    assert start_timeout(env) == limit


def test_under_pmix_the_world_is_named_after_the_pmix_namespace(tmp_path: Path,
                                                                 monkeypatch) -> None:
    """`srun --mpi=pmix` sets no PMI_JOBID: an MPICH built with PMIx hashes the namespace,
    which SLURM names slurm.pmix.<job>.<step>; a later MPICH hashes "<namespace>-1"."""
    import decomp.launch as launch

    env = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "2", "PMIX_NAMESPACE": "slurm.pmix.7.2",
           "PMIX_RANK": "0"}
    assert launch.pmi_job_id(env) == "slurm.pmix.7.2"
    assert launch.pmi_job_id(STEP) == "1.0"
    old = tmp_path / f"mpich_shm_{fnv1a_32('slurm.pmix.7.2'):x}_0"
    new = tmp_path / f"mpich_vci_{fnv1a_32('slurm.pmix.7.2-1'):x}_1"
    pmi2_name = tmp_path / f"mpich_shm_{fnv1a_32('7.2'):x}_0"  # another plugin's: not ours
    for path in (old, new, pmi2_name):
        path.write_bytes(b"\0" * 64)
    assert mpich_segments("slurm.pmix.7.2", tmp_path) == sorted([old, new])
    monkeypatch.setattr(launch, "_started_at", lambda pid: time.time() + 60)  # step: later
    problem = stale_start_state(env, tmp_path)
    assert problem is not None and problem.startswith(
        f"MPI start-up would hang: {old}, {new} is MPICH's start-up shared memory for PMI job "
        "slurm.pmix.7.2 (SLURM job 7, step 2)"), problem
    worlds = sorted([f"{fnv1a_32('slurm.pmix.7.2'):x}", f"{fnv1a_32('slurm.pmix.7.2-1'):x}"])
    remove = " ".join(f"{tmp_path}/mpich_{k}_{w}_*" for w in worlds for k in ("shm", "vci"))
    assert f"rm -f {remove} (the job scripts" in problem
