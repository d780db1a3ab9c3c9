"""The MPI tests at scale: `mpiexec -n 16 python -m pytest --with-mpi tests/mpi_scale`, then the
same at -n 32 (`make test-mpi`), oversubscribed on a small machine. One interpreter per rank
for the whole directory; tiny problems and few steps; no torch in this process."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def comm():
    from mpi4py import MPI

    return MPI.COMM_WORLD
