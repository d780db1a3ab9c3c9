"""Transport micro-benchmarks (collective, on COMM_WORLD; run under ``mpiexec``).

- :func:`masterworker`: one uplink + downlink round of :class:`~decomp.comm.MasterWorker`
  against raw mpi4py;
- :func:`subset`: the partial-participation uplink, zero-count ``Gatherv`` against a
  sub-communicator;
- :func:`neighborhood`: :meth:`~decomp.comm.Neighborhood.exchange` for every wire method.

Each has a ``main_*`` that prints its table on rank 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from decomp.comm.masterworker import GROUP_CACHE, MasterWorker
from decomp.comm.neighborhood import EXCHANGE_METHODS, Neighborhood

__all__ = ["main_masterworker", "main_neighborhood", "main_subset", "masterworker",
           "neighborhood", "subset"]


def masterworker(sizes: tuple[int, ...] = (1024, 16384, 262144, 4 << 20, 16 << 20),
              rounds: int = 7) -> list[tuple[int, float, float]]:
    """One uplink + downlink round of :class:`MasterWorker` (``gather`` of fixed-size
    payloads, ``broadcast_bytes`` of a payload of the same size) against raw mpi4py
    (``Gatherv`` with known counts + ``Bcast`` of a buffer whose size every rank knows), on
    COMM_WORLD (collective). Interleaved rounds; a round's time is the slowest rank's mean;
    returns ``(bytes, decomp µs, raw µs)`` medians. Run::

        mpiexec -n 4 python -c "from decomp.bench.transport import main_masterworker as m; m()"
    """
    import time

    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    tp = MasterWorker(comm)
    out = []
    for nbytes in sizes:
        reps = max(5, min(300, (64 << 20) // (nbytes * comm.Get_size())))
        p = np.full(nbytes, 7, dtype=np.uint8)
        recv = np.empty(nbytes * comm.Get_size(), dtype=np.uint8) if tp.is_master else None
        counts = np.full(comm.Get_size(), nbytes, dtype=np.int64)
        displs = np.arange(comm.Get_size(), dtype=np.int64) * nbytes
        down = np.empty(nbytes, dtype=np.uint8)

        def ours(p: np.ndarray = p, nbytes: int = nbytes) -> None:
            tp.gather(p, nbytes)
            tp.broadcast_bytes(p if tp.is_master else None)

        def raw(p: np.ndarray = p, spec: Any = (recv, counts, displs, MPI.BYTE),
                down: np.ndarray = down) -> None:
            comm.Gatherv(p, list(spec) if tp.is_master else None, root=0)
            comm.Bcast(p if tp.is_master else down, root=0)

        times: dict[str, list[float]] = {"ours": [], "raw": []}
        for _ in range(rounds):
            for name, fn in (("ours", ours), ("raw", raw)):
                fn()
                comm.Barrier()
                t0 = time.perf_counter()
                for _ in range(reps):
                    fn()
                dt = (time.perf_counter() - t0) / reps
                times[name].append(comm.allreduce(dt, op=MPI.MAX))
        out.append((nbytes, 1e6 * float(np.median(times["ours"])),
                    1e6 * float(np.median(times["raw"]))))
    return out


def main_masterworker() -> None:  # pragma: no cover
    """Print :func:`masterworker`'s table on rank 0."""
    from mpi4py import MPI

    res = masterworker()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"{MPI.COMM_WORLD.Get_size()} ranks: gather + broadcast, microseconds (median "
              "over rounds of the slowest rank's mean)")
        for nbytes, ours, raw in res:
            print(f"{nbytes:>10,} B  decomp {ours:10.1f}  raw mpi4py {raw:10.1f}  "
                  f"ratio {ours / raw:5.2f}")


def subset(sizes: tuple[int, ...] = (256, 16384, 1 << 20), p: float = 0.5,
                     rounds: int = 7, reps: int = 200) -> list[tuple[int, float, float, float]]:
    """The partial-participation uplink two ways, on COMM_WORLD with a shared master
    (collective): :meth:`MasterWorker.gather_subset` (zero-count ``Gatherv`` on the whole
    communicator) against :meth:`MasterWorker.gather_subset_group` (``Gatherv`` on a cached
    sub-communicator of the participants), with the same Bernoulli(p) masks for both, drawn
    per round from a fixed seed. Returns ``(bytes, gatherv µs, group µs, group first-use µs)``:
    medians over interleaved rounds of the slowest rank's mean per gather; the last column
    is the mean cost of a gather whose subset has no communicator yet (create + gather).
    Run::

        mpiexec -n 4 python -c "from decomp.bench.transport import main_subset; main_subset()"
    """
    import time

    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    out = []
    for nbytes in sizes:
        tp = MasterWorker(comm)
        n = tp.n_workers
        p_load = np.full(nbytes, 7, dtype=np.uint8)
        masks = np.random.default_rng(nbytes).random((reps, n)) < p

        def run(fn: Any, masks: np.ndarray = masks, p_load: np.ndarray = p_load,
                nbytes: int = nbytes, w: int | None = tp.worker) -> float:
            comm.Barrier()
            t0 = time.perf_counter()
            for m in masks:
                fn(p_load if (w is not None and m[w]) else None, nbytes, m)
            return comm.allreduce((time.perf_counter() - t0) / len(masks), op=MPI.MAX)

        # every subset once (up to the cache size): each gather creates its communicator
        fresh = (np.arange(min(1 << n, GROUP_CACHE))[:, None] >> np.arange(n)) & 1 == 1
        first = run(tp.gather_subset_group, fresh)
        times: dict[str, list[float]] = {"gatherv": [], "group": []}
        for _ in range(rounds):
            times["gatherv"].append(run(tp.gather_subset))
            times["group"].append(run(tp.gather_subset_group))
        out.append((nbytes, 1e6 * float(np.median(times["gatherv"])),
                    1e6 * float(np.median(times["group"])), 1e6 * first))
    return out


def main_subset() -> None:  # pragma: no cover
    """Print :func:`subset`'s table on rank 0."""
    from mpi4py import MPI

    res = subset()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"{MPI.COMM_WORLD.Get_size()} ranks, p = 0.5: one partial-participation gather, "
              "microseconds (median over rounds of the slowest rank's mean)")
        for nbytes, gv, grp, first in res:
            print(f"{nbytes:>10,} B/participant  zero-count Gatherv {gv:9.1f}  "
                  f"sub-communicator {grp:9.1f} (first use of a subset {first:9.1f})")


def neighborhood(sizes: tuple[int, ...] = (64, 1024, 16384, 262144), reps: int = 500,
              rounds: int = 7, topology: str = "ring") -> list[tuple[str, int, float]]:
    """Time ``exchange`` for every method and payload size on COMM_WORLD (collective).

    Methods are interleaved in ``rounds`` rounds of ``reps`` exchanges (fewer for large
    payloads); a round's time is the maximum over ranks of the mean; the result is the median
    over rounds: ``(method, bytes, microseconds per exchange)`` on every rank. Run::

        mpiexec -n 8 python -c "from decomp.bench.transport import main_neighborhood as m; m()"
    """
    import time

    from mpi4py import MPI

    from decomp.topologies import mixing_matrix

    comm = MPI.COMM_WORLD
    W = mixing_matrix(topology, comm.Get_size())
    nbs = {m: Neighborhood(W, comm, method=m) for m in EXCHANGE_METHODS}
    out = []
    for nbytes in sizes:
        n_reps = max(20, reps * 1024 // max(nbytes, 1024))
        payload = np.full(nbytes, comm.Get_rank() % 251, dtype=np.uint8)
        times: dict[str, list[float]] = {m: [] for m in nbs}
        for _ in range(rounds):
            for method, nb in nbs.items():
                for _ in range(5):
                    nb.exchange(payload, nbytes)
                comm.Barrier()
                t0 = time.perf_counter()
                for _ in range(n_reps):
                    got = nb.exchange(payload, nbytes)
                dt = (time.perf_counter() - t0) / n_reps
                assert all(int(v[0]) == j % 251 for j, v in got.items())
                times[method].append(comm.allreduce(dt, op=MPI.MAX))
        out += [(m, nbytes, 1e6 * float(np.median(times[m]))) for m in nbs]
    for nb in nbs.values():
        nb.close()
    return out


def main_neighborhood() -> None:  # pragma: no cover
    """Print :func:`neighborhood`'s table on rank 0 (topology from argv[1], default ring)."""
    import sys

    from mpi4py import MPI

    topo = sys.argv[1] if len(sys.argv) > 1 else "ring"
    res = neighborhood(topology=topo)
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"{MPI.COMM_WORLD.Get_size()} ranks, {topo}: microseconds per exchange "
              "(median over rounds of the max over ranks)")
        for method, nbytes, us in res:
            print(f"{method:<11} {nbytes:>8} B  {us:10.1f} us")
