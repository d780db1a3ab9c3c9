"""Launch context: threads per rank, and where and how this job was started.

Threads per rank (torch, BLAS, numba: cores ÷ ranks on the node) are :mod:`decomp.threads`'s;
:func:`configure_threads` is re-exported here.

Launch context. ``decomp run`` logs, at start, the SLURM job (id, array task, nodes, tasks),
the MPI world (ranks, ranks per node) and the MPI library, and refuses to start when SLURM
started several tasks but MPI sees a world of one rank: that is ``srun`` without the right PMI
(``srun --mpi=none``, or an MPI built without SLURM support), which otherwise runs N silent copies
of a one-rank job, each writing the same outputs; so does torchrun (``WORLD_SIZE``) or another MPI
library's launcher (``OMPI_COMM_WORLD_SIZE``, ``PMI_SIZE``) around a one-rank world. The torch
front ends (``DistributedOptimizer``, ``Trainer``) run the same check
(:func:`check_script_launch`). Set ``DECOMP_ALLOW_SINGLETON=1`` to run anyway.

MPI start-up. Before ``MPI_Init`` an ``srun`` task checks for shared memory that an earlier run
of the same SLURM job left behind (:func:`stale_start_state`: MPICH names it after the PMI job id,
``<job>.<step>`` under ``srun --mpi=pmi2`` and ``slurm.pmix.<job>.<step>`` under ``--mpi=pmix``,
which a requeued job repeats, and opening a stale one hangs or aborts ``MPI_Init``), and a
start-up deadline (:func:`start_deadline`, ``DECOMP_START_TIMEOUT_S``) ends a rank whose
``MPI_Init`` and first collective have not finished in time, with a message, instead of leaving
it hanging until the job's time limit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decomp.errors import LaunchError
from decomp.log import LOGGER
from decomp.threads import configure_threads as configure_threads  # the front ends' import

ALLOW_SINGLETON = "DECOMP_ALLOW_SINGLETON"


@dataclass
class LaunchContext:
    """What this process knows about its launch: SLURM variables and the MPI world."""

    world_size: int
    ranks_per_node: dict[str, int] = field(default_factory=dict)
    mpi_library: str = ""
    launcher: str = ""
    job_id: str | None = None
    array_job_id: str | None = None
    array_task_id: str | None = None
    num_nodes: int | None = None
    nodelist: str | None = None
    job_tasks: int | None = None
    step_id: str | None = None
    step_tasks: int | None = None

    @property
    def in_slurm(self) -> bool:
        return self.job_id is not None

    def describe(self) -> list[str]:
        """Human-readable lines for the start-of-run log."""
        lines = []
        if self.in_slurm:
            job = f"SLURM job {self.job_id}"
            if self.array_task_id is not None:
                job += f" (array {self.array_job_id}, task {self.array_task_id})"
            nodes = f"{self.num_nodes} node(s)" if self.num_nodes is not None else "? node(s)"
            if self.nodelist:
                nodes += f" [{self.nodelist}]"
            if "Hydra" in self.launcher:  # mpiexec's own srun step: one proxy per node
                tasks = f"step {self.step_id} runs {self.step_tasks} Hydra proxy task(s)"
            else:
                tasks = f"{self.job_tasks} task(s)" if self.job_tasks is not None else "? tasks"
                if self.step_tasks is not None:
                    tasks += f", step {self.step_id} runs {self.step_tasks} task(s)"
            lines.append(f"{job} on {nodes}, {tasks}")
        else:
            lines.append("no SLURM job (SLURM_JOB_ID unset)")
        per_node = ", ".join(f"{n} on {host}" for host, n in sorted(self.ranks_per_node.items()))
        lines.append(f"MPI world of {self.world_size} rank(s) on {len(self.ranks_per_node)} "
                     f"node(s): {per_node}; launcher: {self.launcher}")
        lines.append(f"MPI library: {self.mpi_library}")
        return lines


def _int(env: Mapping[str, str], *names: str) -> int | None:
    """The first of ``names`` set to an integer in ``env`` (SLURM_NTASKS, SLURM_NPROCS, ...)."""
    for name in names:
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def detect_launcher(env: Mapping[str, str], world_size: int) -> str:
    """Best guess at what started this process, from the variables launchers set."""
    if "OMPI_COMM_WORLD_SIZE" in env:
        return "mpirun (Open MPI)"
    if "MPI_LOCALNRANKS" in env or "PMI_HOSTNAME" in env:
        return "mpiexec (MPICH Hydra)"
    in_step = "SLURM_STEP_ID" in env and "SLURM_STEP_NUM_TASKS" in env
    if in_step and "PMIX_RANK" in env:
        return "srun --mpi=pmix"
    if in_step and ("PMI_FD" in env or "PMI_RANK" in env):
        return "srun --mpi=pmi2"
    if in_step:
        return "srun without PMI (--mpi=none?)"
    if "PMI_RANK" in env or "PMIX_RANK" in env or "PMI_SIZE" in env:
        return "an MPI launcher (PMI)"
    return "none (singleton)" if world_size == 1 else "unknown"


def slurm_context(env: Mapping[str, str], world_size: int) -> LaunchContext:
    """The launch context from environment variables alone (no MPI calls)."""
    return LaunchContext(
        world_size=world_size,
        launcher=detect_launcher(env, world_size),
        job_id=env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID"),
        array_job_id=env.get("SLURM_ARRAY_JOB_ID"),
        array_task_id=env.get("SLURM_ARRAY_TASK_ID"),
        num_nodes=_int(env, "SLURM_JOB_NUM_NODES", "SLURM_NNODES"),
        nodelist=env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST"),
        job_tasks=_int(env, "SLURM_NTASKS", "SLURM_NPROCS"),
        step_id=env.get("SLURM_STEP_ID"),
        step_tasks=_int(env, "SLURM_STEP_NUM_TASKS"),
    )


def singleton_problem(ctx: LaunchContext) -> str | None:
    """Why a world of one rank looks like a wrong launch, or None if it looks fine.

    Only the step's task count (``SLURM_STEP_NUM_TASKS``, set by ``srun`` for every task it
    starts) decides: ``srun -n 4`` that yields four one-rank worlds is the silent failure. A
    one-rank command run directly in a multi-task allocation (the batch script, ``salloc``) has
    no step count and is allowed; :func:`check_launch` only warns about it. Under ``mpiexec``
    inside an allocation the step count is the number of Hydra proxies (one per node), and the
    world is the full one, so it never trips.
    """
    if ctx.world_size != 1 or ctx.step_tasks is None or ctx.step_tasks <= 1:
        return None
    return (
        f"SLURM started {ctx.step_tasks} tasks in step {ctx.step_id} of job {ctx.job_id}, but "
        f"MPI sees a world of 1 rank here: every task would run its own one-rank copy of the "
        f"job. srun was run without a PMI that this MPI understands (launcher: {ctx.launcher}). "
        f"Launch with `srun --mpi=pmi2 decomp run ...` (or --mpi=pmix for an MPI built with "
        f"PMIx), or with `mpiexec -n $SLURM_NTASKS decomp run ...` inside the allocation; "
        f"`srun --mpi=list` shows the plugins this SLURM has. If one rank per task is really "
        f"wanted, set {ALLOW_SINGLETON}=1."
    )


def launch_context(comm: Any, env: Mapping[str, str] | None = None) -> LaunchContext:
    """Detect the launch context of ``comm`` (collective: every rank must call it)."""
    from mpi4py import MPI

    env = os.environ if env is None else env
    ctx = slurm_context(env, comm.Get_size())
    if comm.Get_size() > 1:
        hosts = comm.allgather(MPI.Get_processor_name())
    else:
        hosts = [MPI.Get_processor_name()]
    ctx.ranks_per_node = dict(Counter(hosts))
    lib = MPI.Get_library_version().replace("\0", "").strip().splitlines()  # Open MPI: a NUL
    ctx.mpi_library = " ".join(lib[0].split()) if lib else "unknown"
    return ctx


#: variables a launcher sets to the number of processes it started, and who sets them
LAUNCHER_SIZES = (("WORLD_SIZE", "torchrun"), ("OMPI_COMM_WORLD_SIZE", "mpirun (Open MPI)"),
                  ("PMI_SIZE", "an MPI launcher (PMI: MPICH/Intel mpiexec)"))


def launcher_tasks(env: Mapping[str, str]) -> tuple[str, str, int] | None:
    """(variable, launcher, count) of the first launcher variable saying several processes
    (torchrun's ``WORLD_SIZE``, Open MPI's ``OMPI_COMM_WORLD_SIZE``, PMI's ``PMI_SIZE``)."""
    for name, who in LAUNCHER_SIZES:
        n = _int(env, name)
        if n is not None and n > 1:
            return name, who, n
    return None


def _allowed(env: Mapping[str, str]) -> bool:
    return env.get(ALLOW_SINGLETON, "").strip() in ("1", "true", "yes")


def refuse_singleton(ctx: LaunchContext, env: Mapping[str, str], command: str = "decomp run ...",
                     single_rank: str = f"pass --single-rank (or set {ALLOW_SINGLETON}=1)",
                     ) -> None:
    """Raise :class:`LaunchError` when this one-rank MPI world was started as one of several
    processes: ``srun`` without a PMI this MPI understands (:func:`singleton_problem`),
    torchrun (``WORLD_SIZE``), a launcher of another MPI library (``OMPI_COMM_WORLD_SIZE``,
    ``PMI_SIZE``), or N copies in a multi-task SLURM batch step (``SLURM_NTASKS``). The
    message names the variable and the command that works (``command``: what to launch,
    e.g. ``python train.py``). ``DECOMP_ALLOW_SINGLETON=1`` runs anyway, with a warning
    (``single_rank``: how the message says so, naming the front end's own switch). Every
    front end calls this one check."""
    if ctx.world_size != 1:
        return
    problem = singleton_problem(ctx)
    if problem is not None:
        problem = problem.replace("decomp run ...", command)
    claimed = launcher_tasks(env) if problem is None else None
    if claimed is not None:
        name, who, n = claimed
        problem = (f"{name}={n}: {who} started {n} processes, but MPI sees a world of 1 rank "
                   f"here: each would train alone, as its own one-rank copy, all writing the "
                   f"same files. ")
        if name == "WORLD_SIZE":
            problem += ("decomp communicates over MPI, not torch.distributed: launch with "
                        f"`mpiexec -n {n} {command}` instead of torchrun (on SLURM: `srun "
                        f"--mpi=pmi2 -n {n} {command}`; docs/torch.md maps torchrun's flags)")
        else:
            problem += ("the launcher belongs to another MPI library than the one mpi4py was "
                        f"built with: launch with that library's `mpiexec -n {n} {command}` "
                        "(`python -m mpi4py --mpi-library` names it; on SLURM: `srun "
                        f"--mpi=pmi2 -n {n} {command}`)")
        problem += f". If one-rank copies are really wanted, set {ALLOW_SINGLETON}=1."
    if problem is not None:
        if not _allowed(env):
            task = env.get("SLURM_PROCID")
            where = f"SLURM task {task}: " if task is not None and claimed is None else ""
            raise LaunchError(where + problem)
        LOGGER.warning("launch: %s=1: running one-rank copies as asked", ALLOW_SINGLETON)
    elif ctx.job_tasks is not None and ctx.job_tasks > 1 and ctx.step_tasks is None:
        # N copies started by hand in a batch script would all write the same run folder
        if not _allowed(env):
            raise LaunchError(
                f"SLURM job {ctx.job_id} has {ctx.job_tasks} tasks but this run has 1 MPI "
                f"rank: started without srun (SLURM_NTASKS={ctx.job_tasks})? Launch it as "
                f"`srun --mpi=pmi2 {command}` (or `mpiexec -n {ctx.job_tasks} {command}`) to "
                f"use them all; if one rank is intended, {single_rank}")
        LOGGER.warning("launch: SLURM job %s has %d tasks; running on 1 rank as asked",
                       ctx.job_id, ctx.job_tasks)


def script_command(argv: list[str] | None = None) -> str:
    """How this process was started, as a launch line's tail: ``python train.py``."""
    argv = sys.argv if argv is None else argv
    script = argv[0] if argv and argv[0] not in ("", "-c", "-") else "script.py"
    return f"python {script}"


def check_script_launch(env: Mapping[str, str] | None = None, world_size: int | None = None,
                        argv: list[str] | None = None) -> None:
    """The launch check of a user's script (``DistributedOptimizer``, ``Trainer``): as
    ``decomp run``'s (:func:`refuse_singleton`) on ``MPI.COMM_WORLD``'s size (not the
    communicator given, which may be a deliberate sub-communicator); no MPI call but the size,
    no log."""
    env = os.environ if env is None else env
    if world_size is None:
        from mpi4py import MPI

        world_size = MPI.COMM_WORLD.Get_size()
    refuse_singleton(slurm_context(env, world_size), env, script_command(argv),
                     single_rank=f"set {ALLOW_SINGLETON}=1")


def start_script(comm: Any, threads: int | None = None) -> int:
    """What a torch front end does first (``DistributedOptimizer``): the launch check
    (:func:`check_script_launch`), then the thread pools (:func:`configure_threads`, collective
    over ``comm``: ranks outside it are not counted). Returns the threads per rank."""
    check_script_launch()
    return configure_threads(comm, threads)


def check_launch(comm: Any, env: Mapping[str, str] | None = None) -> LaunchContext:
    """Detect, check and log the launch context at the start of ``decomp run``.

    Raises :class:`LaunchError` for a one-rank world started as several processes (see
    :func:`refuse_singleton`), unless ``DECOMP_ALLOW_SINGLETON=1``. Logs the context on rank 0.
    """
    env = os.environ if env is None else env
    ctx = launch_context(comm, env)
    refuse_singleton(ctx, env)
    if comm.Get_rank() == 0:
        for line in ctx.describe():
            LOGGER.info("launch: %s", line)
    return ctx


# ---- MPI start-up: state left by an earlier run of the job, a deadline -----------------------

SHM_DIR = Path("/dev/shm")
START_TIMEOUT = "DECOMP_START_TIMEOUT_S"
DEFAULT_START_TIMEOUT_S = 300.0


def fnv1a_32(text: str) -> int:
    """32-bit FNV-1a of ``text``: how MPICH turns its PMI job id into the world id."""
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def mpich_world_ids(pmi_job: str) -> list[str]:
    """The world ids (hex) MPICH may derive from the PMI job id ``pmi_job``: the 32-bit
    FNV-1a of the id itself (MPICH 4.1-5.0), and of ``<id>-1`` (MPICH after 5.0 appends its
    init count, 1 for the first ``MPI_Init``, so that a re-initialised world gets new names)."""
    return [f"{fnv1a_32(pmi_job):x}", f"{fnv1a_32(pmi_job + '-1'):x}"]


def mpich_segments(pmi_job: str, shm_dir: Path = SHM_DIR) -> list[Path]:
    """The start-up shared-memory files of the MPICH world whose PMI job id is ``pmi_job``:
    ``mpich_shm_<world id>_<node>`` and ``mpich_vci_<world id>_<node>`` (MPICH >= 4.1,
    ch4:posix). Every local rank opens the one file; the first creates it; MPI_Finalize
    removes it, so a rank killed before that leaves it behind."""
    return sorted(p for world in mpich_world_ids(pmi_job) for kind in ("shm", "vci")
                  for p in shm_dir.glob(f"mpich_{kind}_{world}_*"))


def pmi_job_id(env: Mapping[str, str]) -> str:
    """The job id MPICH names its world after in an ``srun`` task: ``PMI_JOBID`` under
    ``--mpi=pmi2`` (``<job>.<step>``), the PMIx namespace under ``--mpi=pmix``
    (``PMIX_NAMESPACE``, which SLURM's pmix plugin names ``slurm.pmix.<job>.<step>``), or ""."""
    return env.get("PMI_JOBID", "") or env.get("PMIX_NAMESPACE", "")


def _started_at(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch, from /proc), or None."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(int(line.split()[1]) for line in
                     Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def stale_start_state(env: Mapping[str, str] | None = None,
                      shm_dir: Path = SHM_DIR) -> str | None:
    """Why ``MPI_Init`` would hang in this ``srun`` task, or None. Call it before MPI starts.

    Under ``srun`` MPICH names its start-up shared memory after the PMI job id
    (:func:`pmi_job_id`: ``<job>.<step>`` with pmi2, ``slurm.pmix.<job>.<step>`` with pmix). A
    requeued job keeps its job id and numbers its steps from 0 again, so a segment left by
    ranks that were killed before MPI_Finalize (SIGKILL at the end of SLURM's KillWait, a
    node's OOM killer) is opened by the next run's ranks: none of them initialises it, and
    MPI_Init hangs or aborts ("Message truncated" in the netmod's set-up). A segment last
    modified before the process that started this task (slurmstepd) began cannot belong to
    this step: its first rank creates (and sizes) it only once running.
    """
    env = os.environ if env is None else env
    pmi_job = pmi_job_id(env)
    if not pmi_job or "SLURM_STEP_ID" not in env:
        return None
    started = _started_at(os.getppid()) or _started_at(os.getpid())
    if started is None:
        return None
    stale = []
    for path in mpich_segments(pmi_job, shm_dir):
        try:
            st = path.stat()
        except OSError:
            continue  # removed meanwhile
        if st.st_mtime < started - 2.0:  # created (or last written) before the step began
            stale.append(path)
    if not stale:
        return None
    worlds = sorted({p.name.split("_")[2] for p in stale})
    remove = " ".join(f"{shm_dir}/mpich_{kind}_{world}_*" for world in worlds
                      for kind in ("shm", "vci"))
    return (f"MPI start-up would hang: {', '.join(map(str, stale))} is MPICH's start-up shared "
            f"memory for PMI job {pmi_job} (SLURM job {env.get('SLURM_JOB_ID', '?')}, step "
            f"{env.get('SLURM_STEP_ID', '?')}), left by an earlier run of this job whose ranks "
            f"were killed before MPI_Finalize (a requeued job reuses its job id and step "
            f"numbers). Remove it before srun starts the ranks: rm -f {remove} (the job "
            f"scripts of jobs/slurm/ and `decomp slurm` do this)")


#: the watchdog process of :func:`start_deadline`: waits for its stdin to close (start-up
#: done, or the rank gone); on the deadline prints the message and kills the rank
_DEADLINE_CHILD = """
import os, select, signal, sys
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)  # the rank's signals are the rank's: EOF ends this
pid, limit, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if not select.select([0], [], [], limit)[0]:
    os.write(2, message.encode())
    os.kill(pid, signal.SIGKILL)
"""


def start_timeout(env: Mapping[str, str] | None = None) -> float:
    """``DECOMP_START_TIMEOUT_S`` in seconds (default 300; 0 turns the deadline off)."""
    env = os.environ if env is None else env
    try:
        value = float(env.get(START_TIMEOUT, DEFAULT_START_TIMEOUT_S))
    except ValueError:
        return DEFAULT_START_TIMEOUT_S
    return value if value >= 0 else DEFAULT_START_TIMEOUT_S


def start_deadline(env: Mapping[str, str] | None = None) -> Callable[[], None]:
    """Arm the start-up deadline; returns the call that disarms it (start-up done).

    ``MPI_Init`` holds the interpreter, so no Python thread or signal handler can act while
    it hangs: a small watchdog process does. If the returned call has not been made after
    :func:`start_timeout` seconds, it prints why and kills this rank with SIGKILL (``srun
    --kill-on-bad-exit`` or mpiexec then end the others): a start-up that hangs (a stale
    shared-memory segment, a launcher whose PMI this MPI does not speak, a rank that never
    started) fails with a message instead of running into the job's time limit silently.
    """
    env = os.environ if env is None else env
    limit = start_timeout(env)
    if limit == 0:
        return lambda: None
    rank = env.get("PMI_RANK") or env.get("SLURM_PROCID") or env.get("OMPI_COMM_WORLD_RANK")
    message = (f"[rank {rank if rank is not None else '?'}] ERROR: MPI start-up (MPI_Init and "
               f"the first collective) has not finished after {limit:g} s: ending this rank "
               f"(pid {os.getpid()}). Likely causes: a launcher whose PMI this MPI does not "
               f"speak (`srun --mpi=pmi2` for the MPICH wheel), a rank that never started, "
               f"shared memory in /dev/shm left by killed ranks of an earlier run with the "
               f"same job id. Set {START_TIMEOUT} to change the limit (0: no limit).\n")
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _DEADLINE_CHILD, str(os.getpid()), str(limit),
             message], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    except OSError as e:
        LOGGER.warning("launch: no start-up deadline (%s)", e)
        return lambda: None

    def disarm() -> None:
        if child.stdin is not None and not child.stdin.closed:
            child.stdin.close()
            child.wait()

    return disarm
