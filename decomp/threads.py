"""Threads per rank: torch (intra- and inter-op), BLAS/OpenMP and numba get cores ÷ ranks per node.

Several ranks usually share a node. A pool that starts one thread per core in every rank
oversubscribes the cores and slows every collective (4 ranks on 2 cores ran a dense-gradient
EF21 step 20x slower with default OpenBLAS threads than with one per rank). The rule, unless
the user says otherwise (``--threads``, the ``threads=`` argument, or ``OMP_NUM_THREADS``)::

    threads = max(1, cores usable on this node // ranks on this node)

"cores" are the union of the CPU affinity masks of the node's ranks (a launcher or SLURM that
binds ranks to cores is respected); "ranks on this node" are the larger of the ranks sharing
memory with this one (``MPI_COMM_TYPE_SHARED``) and the ranks reporting this host's name (ranks
in network namespaces, like the emulated cluster's, share the cores but not the memory).

A pool is sized when it starts: OpenBLAS at numpy's import, numba's at its first parallel
call (from ``NUMBA_NUM_THREADS`` as read at numba's import), OpenMP's (torch) at its first use,
torch's inter-op pool at its first use (and ``torch.set_num_interop_threads`` only works
before). So it is set twice: :func:`preset_threads` before anything is imported, from the
launcher's count of ranks on the node (``MPI_LOCALNRANKS`` of MPICH/Intel MPI's mpiexec,
``OMPI_COMM_WORLD_LOCAL_SIZE``, ``SLURM_STEP_TASKS_PER_NODE``), into the environment the
libraries read at start; then :func:`configure_threads` with the communicator, which applies
the exact rule to every pool already loaded and to torch right after its import
(:func:`_after_import`), for a user's script too.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from decomp.errors import ConfigError
from decomp.log import LOGGER

#: what each library reads at start for its pool size
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def user_threads(env: Mapping[str, str] | None = None) -> int | None:
    """``OMP_NUM_THREADS`` when it is a whole number >= 1 (the user's choice), else None."""
    value = (os.environ if env is None else env).get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def launcher_local_ranks(env: Mapping[str, str]) -> int | None:
    """Ranks on this node as the launcher says, before MPI starts (None: no launcher known)."""
    for name in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE"):
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    per_node, node = env.get("SLURM_STEP_TASKS_PER_NODE", ""), env.get("SLURM_NODEID", "0")
    counts: list[int] = []
    for part in filter(None, per_node.split(",")):  # "2(x3),1": 2 tasks on 3 nodes, then 1
        count, _, times = part.partition("(x")
        if not count.isdigit() or not (times.rstrip(")") or "1").isdigit():
            return None
        counts += [int(count)] * int(times.rstrip(")") or "1")
    return counts[int(node)] if node.isdigit() and int(node) < len(counts) else None


def preset_threads(env: MutableMapping[str, str] | None = None,
                   threads: int | None = None) -> int | None:
    """Before numpy, numba or torch is imported: set the thread variables they read at start to
    ``threads`` (``--threads``: all of them), else to cores ÷ the launcher's ranks on this node
    (only those the user left unset; nothing if ``OMP_NUM_THREADS`` is set or no launcher
    says). Returns the count set, or None."""
    env = os.environ if env is None else env
    if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1:
        env.update(dict.fromkeys(THREAD_VARS, str(threads)))
        return threads
    local = launcher_local_ranks(env)
    if user_threads(env) is not None or local is None:
        return None
    threads = max(1, usable_cores() // local)
    for name in THREAD_VARS:
        env.setdefault(name, str(threads))
    return threads


def node_share(comm: Any) -> tuple[int, int]:
    """(ranks sharing this rank's cores, cores they may use) (collective over ``comm``)."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        mine = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        masks = local.allgather(mine) if local.Get_size() > 1 else [mine]
        shared = int(local.Get_size())
    finally:
        local.Free()
    cores = len(set().union(*masks)) or usable_cores()
    name = MPI.Get_processor_name()
    hosts = comm.allgather(name) if comm.Get_size() > 1 else [name]
    return max(shared, hosts.count(name)), cores


def configure_threads(comm: Any, threads: int | None = None) -> int:
    """Set every thread pool of this rank (see the module doc); returns the count applied:
    ``threads``, else ``OMP_NUM_THREADS``, else cores ÷ ranks on the node (collective)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ConfigError(f"--threads must be a whole number >= 1 (BLAS/torch threads per "
                          f"rank), got {threads!r}; omit it for cores / ranks on the node")
    if threads is None:
        threads = user_threads()
    if threads is None:
        ranks, cores = node_share(comm)
        threads = max(1, cores // ranks)
    apply_threads(threads)
    return threads


def apply_threads(threads: int) -> None:
    """Give every pool ``threads``: the variables (for libraries imported later), the BLAS and
    OpenMP pools loaded now (threadpoolctl), numba, and torch now or right after its import."""
    from threadpoolctl import threadpool_limits

    numba = sys.modules.get("numba")
    started = numba is not None and _numba_pool_started()
    for name in THREAD_VARS:  # numba refuses a new NUMBA_NUM_THREADS once its pool runs
        if not (started and name == "NUMBA_NUM_THREADS"):
            os.environ[name] = str(threads)
    threadpool_limits(limits=threads)
    if numba is not None:
        if started:  # the pool has its size: use at most `threads` of it
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        else:  # numba read NUMBA_NUM_THREADS at import: read it again, before the pool starts
            from numba.np.ufunc import parallel

            numba.config.reload_config()
            parallel.NUM_THREADS = parallel.get_thread_count()
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch_threads(torch, threads)
    else:  # importing torch costs seconds: only when someone does
        _after_import("torch", lambda module: torch_threads(module, threads))


def _numba_pool_started() -> bool:
    from numba.np.ufunc import parallel

    return bool(parallel._is_initialized)


def torch_threads(torch: Any, threads: int) -> None:
    """torch's intra-op pool, and its inter-op pool if it has not started yet."""
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError as e:  # started already (inter-op work ran, or set once before)
            LOGGER.debug("threads: torch's inter-op pool keeps %d threads (%s)",
                         torch.get_num_interop_threads(), e)


class _AfterImport:
    """A meta-path finder that runs ``hook(module)`` once ``name`` has been imported."""

    def __init__(self, name: str, hook: Callable[[Any], None]) -> None:
        self.name, self.hook = name, hook

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once, and not for the lookup below
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module
        hook = self.hook

        def exec_module(module: Any) -> None:
            run(module)
            hook(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _after_import(name: str, hook: Callable[[Any], None]) -> None:
    """Run ``hook`` on module ``name`` right after it is imported (replacing an earlier
    hook for the same name)."""
    sys.meta_path[:] = [f for f in sys.meta_path
                        if not (isinstance(f, _AfterImport) and f.name == name)]
    sys.meta_path.insert(0, _AfterImport(name, hook))


def thread_report() -> dict[str, Any]:
    """The pools this process has now: torch (intra, inter-op), BLAS/OpenMP libraries
    (threadpoolctl), numba, and the thread variables (``decomp info``, the tests)."""
    from threadpoolctl import threadpool_info

    report: dict[str, Any] = {name: os.environ.get(name) for name in THREAD_VARS}
    torch = sys.modules.get("torch")
    if torch is not None:
        report["torch"] = (torch.get_num_threads(), torch.get_num_interop_threads())
    report["pools"] = sorted({(p["internal_api"], p["num_threads"]) for p in threadpool_info()})
    numba = sys.modules.get("numba")
    if numba is not None:
        report["numba"] = numba.get_num_threads()
    return report
