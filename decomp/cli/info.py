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

    from decomp.threads import configure_threads, node_share, thread_report

    names = comm.allgather(MPI.Get_processor_name())
    share = node_share(comm)
    threads = configure_threads(comm)  # what decomp run gives each rank
    try:  # torch's pools as they come out of its import (seconds; only for this report)
        import torch  # noqa: F401
    except ImportError:
        pass
    import numba  # noqa: F401

    reports = comm.gather((share, threads, thread_report()), root=0)
    if comm.Get_rank() != 0:
        return 0
    print(f"decomp       {version('decomp')}")
    print(f"python       {platform.python_version()} ({sys.executable})")
    for pkg in ("numpy", "scipy", "numba", "mpi4py", "scikit-learn", "torch"):
        try:
            print(f"{pkg:<12} {version(pkg)}")
        except PackageNotFoundError:
            print(f"{pkg:<12} not installed")
    lib = MPI.Get_library_version().replace("\0", "").strip().splitlines()[0]
    print(f"MPI library  {lib}")
    print(f"MPI standard {'.'.join(map(str, MPI.Get_version()))}")
    print(f"ranks        {comm.Get_size()} on {len(set(names))} host(s): "
          f"{', '.join(sorted(set(names)))}")
    print(f"threads      cores here {os.cpu_count()}; per rank: cores ÷ ranks on its node, "
          f"unless OMP_NUM_THREADS (docs/running.md)")
    for rank, ((ranks, cores), n, got) in enumerate(reports):
        torch_n = "torch intra/inter-op {}/{}".format(*got["torch"]) if "torch" in got else \
            "torch not installed"
        pools = ", ".join(f"{api} {k}" for api, k in got["pools"]) or "none"
        print(f"  rank {rank:<3} {names[rank]}: {ranks} rank(s) on {cores} core(s) -> {n}: "
              f"{torch_n}, BLAS/OpenMP {pools}, numba {got.get('numba', '?')}")
    return 0
