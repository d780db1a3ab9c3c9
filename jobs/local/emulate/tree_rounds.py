#!/usr/bin/env python3
"""Where one aggregation's time goes, round by round and rank by rank (docs/networks.md,
"8 hosts: tree against gather"): EF21's Top-k payloads summed by ``aggregation = "gather"``
and ``"tree"``, every phase timed on every rank. An investigation tool, not a benchmark:

    flock /tmp/decomp-emulate.lock python jobs/local/emulate/cluster.py run --hosts 8 \\
        --ranks-per-host 1 --rate 100mbit -- python jobs/local/emulate/tree_rounds.py \\
        --d 1101834 --ratio 0.01 --reps 6 [--compute-ms 0] [--json out.json]

Every rank encodes a random vector with Top-k once. Per repetition (all ranks leave a barrier,
then optionally spin ``--compute-ms`` of CPU to stand for the gradient) the aggregation runs
with every phase stamped on the rank's clock relative to the barrier's end: for the tree, per
round the time from its sends posted to the partner's range received and its own sent (the
merge and the next encode are the gap before the next round); for the gather, the
``Gatherv``, the master's sum and the ``broadcast_bytes``. Rank 0 prints, per mode, the wall
time of the slowest rank per repetition and its median, the CPU seconds all ranks used per
wall second, and every rank's phases of the middle repetition. ``DECOMP_TREE_WAIT_US=0``
makes the tree wait in MPI's blocking calls (spinning), as before the fix of docs/networks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from decomp.algorithms import Env
from decomp.algorithms.base import Own, share_sum
from decomp.comm import MasterWorker
from decomp.compress import TopK
from decomp.rng import Key


def spin(ms: float) -> None:
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass


def instrument(tp: MasterWorker, log: list[list[tuple[str, float, float]]],
               t0: list[float]) -> None:
    """Wrap the transport's tree exchange to stamp every round: from its sends posted to the
    last message received and its sends complete (the merge between rounds is the gap)."""
    inner = tp._exchange

    def exchange(rd: Any, out: list[np.ndarray]) -> list[np.ndarray]:
        a = time.perf_counter()
        got = inner(rd, out)
        peers = ",".join(str(p) for p, _, _ in rd.recvs or rd.sends)
        sizes = "/".join(f"{m.size}" for m in out) + ">" + "/".join(f"{m.size}" for m in got)
        log[0].append((f"{rd.op}<->{peers} {sizes}B", a - t0[0],
                       time.perf_counter() - t0[0]))
        return got

    tp._exchange = exchange  # type: ignore[method-assign]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--d", type=int, default=1_101_834)
    p.add_argument("--ratio", type=float, default=0.01)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--compute-ms", type=float, default=0.0)
    p.add_argument("--modes", default="gather,tree,gather,tree")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    comm = MPI.COMM_WORLD
    C = TopK(ratio=a.ratio)
    v = np.random.default_rng(comm.rank).standard_normal(a.d).astype(np.float32)
    pay = C.encode(v, Key(0, comm.rank, 0))
    x = np.zeros(a.d, np.float32)
    report: dict[str, Any] = {"n": comm.size, "d": a.d, "k": C.k_for(a.d), "modes": []}
    for mode in a.modes.split(","):
        tp = MasterWorker(comm, "shared", mode)
        env = Env(tp, None, tp.n_workers, 0, 0.1)
        reps = []
        box: list[list[tuple[str, float, float]]] = [[]]
        t0 = [0.0]
        if mode == "tree":
            instrument(tp, box, t0)
        for _ in range(a.reps):
            log = box[0] = []
            comm.Barrier()
            t0[0] = time.perf_counter()
            c0 = time.process_time()
            spin(a.compute_ms)
            log.append(("compute", 0.0, time.perf_counter() - t0[0]))
            if mode == "gather":
                s = time.perf_counter()
                got = tp.gather(pay, pay.size)
                g = time.perf_counter()
                log.append(("gather", s - t0[0], g - t0[0]))
                share_sum(env, C, got, x)
                log.append(("sum+bcast", g - t0[0], time.perf_counter() - t0[0]))
            else:
                share_sum(env, C, Own(pay), x)
            wall = time.perf_counter() - t0[0]
            reps.append({"wall": wall, "cpu": time.process_time() - c0, "log": log})
        every = comm.gather(reps, root=0)
        if comm.rank == 0:
            report["modes"].append({"mode": mode, "ranks": every})
            walls = [max(every[r][i]["wall"] for r in range(comm.size)) for i in range(a.reps)]
            cpus = [sum(every[r][i]["cpu"] for r in range(comm.size)) / walls[i]
                    for i in range(a.reps)]
            print(f"== {mode}: n={comm.size} d={a.d} k={C.k_for(a.d)} compute {a.compute_ms} ms;"
                  f" slowest rank's wall per rep (ms): "
                  + ", ".join(f"{w * 1e3:.1f}" for w in walls)
                  + f"; median {statistics.median(walls) * 1e3:.1f}; CPU s per wall s "
                  f"(all ranks) {statistics.median(cpus):.2f}", flush=True)
            for r in range(comm.size):
                row = every[r][a.reps // 2]["log"]
                print(f"  rank {r}: " + "; ".join(
                    f"{name} {s * 1e3:.1f}->{e * 1e3:.1f}" for name, s, e in row), flush=True)
    if comm.rank == 0 and a.json:
        a.json.write_text(json.dumps(report))


if __name__ == "__main__":
    main()
