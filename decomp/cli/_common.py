"""What every sub-command shares: exit codes, the job-ending error path, TOML quoting."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3


def fail(comm: Any, message: str, code: int = EXIT_ERROR) -> int:
    """Print the error with this rank's id and end the whole MPI job."""
    rank = comm.Get_rank() if comm is not None else 0
    print(f"[rank {rank}] ERROR: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    if comm is not None and comm.Get_size() > 1:
        # The launcher forwards our stderr through its proxies; MPI_Abort tears them down at
        # once and can drop the message on a loaded node. A short grace period lets it out.
        time.sleep(float(os.environ.get("DECOMP_ABORT_GRACE_S", "1.0")))
        comm.Abort(code)  # the other ranks may be blocked in a collective: end them too
    return code


def world() -> Any:
    from mpi4py import MPI

    return MPI.COMM_WORLD


def quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
