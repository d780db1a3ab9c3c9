"""``decomp info``: versions, MPI library, ranks and hosts."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from decomp.cli._common import world


def add_parser(sub: Any) -> None:
    i = sub.add_parser("info", help="versions, MPI library and ranks")
    i.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    import os
    import platform
    from importlib.metadata import PackageNotFoundError, version

    comm = world()
    from mpi4py import MPI

    names = comm.allgather(MPI.Get_processor_name())
    if comm.Get_rank() != 0:
        return 0
    print(f"decomp       {version('decomp')}")
    print(f"python       {platform.python_version()} ({sys.executable})")
    for pkg in ("numpy", "scipy", "numba", "mpi4py", "scikit-learn", "torch"):
        try:
            print(f"{pkg:<12} {version(pkg)}")
        except PackageNotFoundError:
            print(f"{pkg:<12} not installed")
    lib = MPI.Get_library_version().strip().splitlines()[0]
    print(f"MPI library  {lib}")
    print(f"MPI standard {'.'.join(map(str, MPI.Get_version()))}")
    print(f"ranks        {comm.Get_size()} on {len(set(names))} host(s): "
          f"{', '.join(sorted(set(names)))}")
    print(f"threads      OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"cores here {os.cpu_count()}")
    return 0
