"""Time one aggregation of EF21's Top-k payloads, gather against tree (docs/netmodel.md,
"Tree aggregation"): the uplink, the sum and the downlink of one step, without the gradient.

    mpiexec -n 4 python jobs/local/aggregation_bench.py [d] [ratio] [reps]

Every rank encodes a random vector with Top-k (ratio of d) once; then, per mode, ``reps``
times: gather + the master's re-encoding + ``broadcast_bytes`` (gather) or ``tree_sum`` (tree),
each between barriers. Prints the median of the slowest rank and the largest bytes a rank
sent up per step.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from mpi4py import MPI

from decomp.algorithms import Env
from decomp.algorithms.base import Own, share_sum
from decomp.comm import MasterWorker
from decomp.compress import TopK
from decomp.rng import Key


def main() -> None:
    comm = MPI.COMM_WORLD
    d = int(sys.argv[1]) if len(sys.argv) > 1 else 1_101_834
    ratio = float(sys.argv[2]) if len(sys.argv) > 2 else 0.01
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    C = TopK(ratio=ratio)
    v = np.random.default_rng(comm.rank).standard_normal(d).astype(np.float32)
    p = C.encode(v, Key(0, comm.rank, 0))
    x = np.zeros(d, np.float32)
    for mode in ("gather", "tree", "gather", "tree"):  # twice: the first round warms up
        tp = MasterWorker(comm, "shared", mode)
        env = Env(tp, None, tp.n_workers, 0, 0.1)
        ts = []
        for _ in range(reps):
            comm.Barrier()
            t0 = time.perf_counter()
            share_sum(env, C, tp.gather(p, p.size) if mode == "gather" else Own(p), x)
            ts.append(time.perf_counter() - t0)
        t = comm.allreduce(float(np.median(ts)), op=MPI.MAX)
        up = comm.allreduce(tp.bytes.up, op=MPI.MAX) / reps
        if comm.rank == 0:
            print(f"n={comm.size} d={d} k={C.k_for(d)} {mode:6s} median {t * 1e3:8.2f} ms "
                  f"(slowest rank); max up/rank/step {up:,.0f} B", flush=True)


if __name__ == "__main__":
    main()
