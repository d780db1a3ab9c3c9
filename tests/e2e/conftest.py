"""E2E helpers: run the `decomp` command under mpiexec as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    p = BIN / name
    if p.exists():
        return str(p)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found next to {sys.executable} or on PATH (run `make setup`)")
    return found


def run_cli(args: list[str], *, np: int | None = None, timeout: float = 240,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`[mpiexec -n np] decomp ARGS`, with one thread per rank and no progress bar."""
    cmd = [_tool("decomp"), *args]
    if np is not None:
        cmd = [_tool("mpiexec"), "-n", str(np), *cmd]
    env = dict(os.environ, OMP_NUM_THREADS="1", DECOMP_PROGRESS="0")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env, check=False)


@pytest.fixture(scope="session")
def startup_s() -> float:
    """Seconds a 2-rank MPI job that only imports decomp's engine takes on this machine now:
    the unit of the wall-time limits of jobs that must end "promptly" (a loaded machine
    stretches every start-up alike, so a limit of a few start-ups holds at any load while a
    hang still fails it). Measured once per session."""
    import time

    code = "import decomp.runner; from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"
    t0 = time.monotonic()
    subprocess.run([_tool("mpiexec"), "-n", "2", sys.executable, "-c", code], check=True,
                   timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return time.monotonic() - t0
