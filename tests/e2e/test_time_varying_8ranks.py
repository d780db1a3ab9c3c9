"""tests/mpi/test_time_varying.py at 8 ranks (oversubscribed here): the one-peer schedules
with period 3 (an edge of the hypercube idles 2 steps between uses, so per-edge replicas must
catch up), D-PSGD / DCD-PSGD / CHOCO-SGD against the reference bit for bit, the replica
agreement at both ends of every edge, decomp run vs decomp sim, a resume mid-period, the
refusals and the Trainer, beyond the 4 ranks of `make test-mpi`."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.e2e.conftest import REPO, _tool


def test_time_varying_schedules_at_8_ranks() -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", DECOMP_PROGRESS="0")
    r = subprocess.run([_tool("mpiexec"), "-n", "8", sys.executable, "-m", "pytest",
                        "--with-mpi", "-p", "no:cacheprovider", "-q", "--timeout=240",
                        str(REPO / "tests/mpi/test_time_varying.py")],
                       capture_output=True, text=True, timeout=600, cwd=REPO, env=env,
                       check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "14 passed" in r.stdout and "skipped" not in r.stdout, r.stdout[-2000:]
