"""`decomp run` whose MPI start-up would hang: a stale MPICH segment of its SLURM step is
refused before MPI_Init, and a start-up that hangs anyway (a PMI server that never answers) is
ended by the start-up deadline (DECOMP_START_TIMEOUT_S) with a message, not by a time limit."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from decomp.launch import fnv1a_32
from tests.e2e.conftest import BIN, REPO


def _decomp_run(env: dict[str, str], pass_fds: tuple[int, ...] = ()
                ) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = subprocess.run([str(BIN / "decomp"), "run",
                        str(REPO / "jobs" / "configs" / "ef21_a9a.toml"), "--out", "/nonexistent"],
                       env={**os.environ, **env}, pass_fds=pass_fds, capture_output=True,
                       text=True, timeout=120)
    return r, time.monotonic() - t0


def test_a_start_up_that_hangs_ends_with_a_message() -> None:
    """A PMI server that never answers (PMI_FD: one end of a socket pair) holds MPI_Init
    forever; the deadline ends the rank after DECOMP_START_TIMEOUT_S."""
    pmi, _server = socket.socketpair()
    r, elapsed = _decomp_run({"PMI_FD": str(pmi.fileno()), "PMI_RANK": "3", "PMI_SIZE": "4",
                              "DECOMP_START_TIMEOUT_S": "3"}, (pmi.fileno(),))
    assert r.returncode == -9, (r.returncode, r.stderr)
    assert r.stderr.startswith("[rank 3] ERROR: MPI start-up (MPI_Init and the first "
                               "collective) has not finished after 3 s: ending this rank"), r.stderr
    assert elapsed < 3 + 60  # the limit, and the imports of a loaded machine


def test_a_stale_segment_of_the_step_is_refused_before_mpi_starts() -> None:
    """PMI_JOBID names a world whose segment is hours old: refused at once, MPI never started
    (PMI_FD points nowhere: MPI_Init would hang)."""
    job = f"decomp-test-{os.getpid()}.0"
    seg = Path("/dev/shm") / f"mpich_shm_{fnv1a_32(job):x}_0"
    if not seg.parent.is_dir():
        pytest.skip("no /dev/shm")
    pmi, _server = socket.socketpair()
    try:
        seg.write_bytes(b"\0" * 64)
        day_ago = time.time() - 86400
        os.utime(seg, (day_ago, day_ago))
        r, elapsed = _decomp_run({"PMI_FD": str(pmi.fileno()), "PMI_RANK": "1",
                                  "PMI_SIZE": "2", "PMI_JOBID": job, "SLURM_JOB_ID": "1",
                                  "SLURM_STEP_ID": "0", "DECOMP_START_TIMEOUT_S": "30"},
                                 (pmi.fileno(),))
    finally:
        seg.unlink(missing_ok=True)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith(f"[rank 1] ERROR: MPI start-up would hang: {seg} is MPICH's "
                               f"start-up shared memory for PMI job {job}"), r.stderr
    assert elapsed < 60  # the imports only: MPI never started
