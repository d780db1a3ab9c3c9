"""tests/mpi/test_directed_mixing.py at 8 ranks (oversubscribed here): directed and
time-varying W (one-peer exponential with shifts 1, 2, 4; the skewed ring), the transposed
weight, the runner's and the Trainer's refusal and D-PSGD runs, beyond the 4 ranks of
`make test-mpi`."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.e2e.conftest import REPO, _tool


def test_directed_and_time_varying_W_at_8_ranks() -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", DECOMP_PROGRESS="0")
    r = subprocess.run([_tool("mpiexec"), "-n", "8", sys.executable, "-m", "pytest",
                        "--with-mpi", "-p", "no:cacheprovider", "-q", "--timeout=240",
                        str(REPO / "tests/mpi/test_directed_mixing.py")],
                       capture_output=True, text=True, timeout=600, cwd=REPO, env=env,
                       check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "11 passed" in r.stdout and "skipped" not in r.stdout, r.stdout[-2000:]
