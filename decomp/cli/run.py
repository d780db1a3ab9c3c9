"""``decomp run CONFIG``: every method of a config on MPI (launch with mpiexec/srun)."""

from __future__ import annotations

import argparse
import traceback
from typing import Any

from decomp.cli._common import EXIT_DIVERGED, EXIT_ERROR, fail, quote, world
from decomp.errors import DecompError


def add_parser(sub: Any) -> None:
    r = sub.add_parser("run", help="run a config's methods on MPI (launch with mpiexec/srun)")
    r.add_argument("config", help="TOML config file")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key (dotted path), repeatable")
    r.add_argument("--out", help="output directory (default: the config's out_dir, 'runs')")
    r.add_argument("--data-dir", help="directory with LIBSVM files (default: $DECOMP_DATA)")
    r.add_argument("--steps", type=int, help="override run.steps")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--threads", type=int, help="BLAS/torch threads per rank "
                   "(default: $OMP_NUM_THREADS, else cores / ranks on the node)")
    folder = r.add_mutually_exclusive_group()
    folder.add_argument("--resume", nargs="?", const="always", choices=("always", "auto"),
                        help="continue <out_dir>/<name>/ from its checkpoints (run.steps may "
                        "grow; anything else must be unchanged); --resume auto: resume if the "
                        "folder holds a run, else start it (requeued SLURM jobs)")
    folder.add_argument("--overwrite", action="store_true",
                        help="replace the results in an existing <out_dir>/<name>/")
    r.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="override run.checkpoint_every (0: only at the end of each method and "
                   "on a signal)")
    r.add_argument("--comm-timeout", type=float, metavar="SECONDS",
                   help="override run.comm_timeout_s (the watchdog's limit on a silent rank "
                        "or a step that does not complete)")
    r.add_argument("--single-rank", action="store_true",
                   help="inside a SLURM allocation of several tasks, run on one rank anyway")
    r.set_defaults(func=cmd_run)


def overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` plus the shorthand flags (--out, --data-dir, --steps) as overrides."""
    out = list(args.set or [])
    if getattr(args, "out", None):
        out.append(f"out_dir={quote(args.out)}")
    if args.data_dir:
        out.append(f"data_dir={quote(args.data_dir)}")
    if args.steps is not None:
        out.append(f"run.steps={args.steps}")
    if getattr(args, "checkpoint_every", None) is not None:
        out.append(f"run.checkpoint_every={args.checkpoint_every}")
    if getattr(args, "comm_timeout", None) is not None:
        out.append(f"run.comm_timeout_s={args.comm_timeout}")
    return out


def resume_command(args: argparse.Namespace, world_size: int = 1) -> str:
    """The command that continues this run: the same config, --out, --steps, --set,
    --data-dir and every other flag of this one, ``--resume`` instead of ``--overwrite`` or
    ``--resume auto``, under ``mpiexec -n <world size>`` (a resume needs the same size)."""
    import shlex

    words = ["mpiexec", "-n", str(world_size)] if world_size > 1 else []
    words += ["decomp", "run", args.config]
    for flag, value in (("--out", args.out), ("--data-dir", args.data_dir),
                        ("--steps", args.steps), ("--threads", args.threads),
                        ("--checkpoint-every", args.checkpoint_every),
                        ("--comm-timeout", args.comm_timeout)):
        if value is not None:
            words += [flag, str(value)]
    for s in args.set or []:
        words += ["--set", s]
    words += [f for f, on in (("--no-progress", args.no_progress),
                              ("--single-rank", args.single_rank)) if on]
    return shlex.join([*words, "--resume"])


def cmd_run(args: argparse.Namespace) -> int:
    """Every rank: run the config; any error on any rank ends the whole job (MPI_Abort); a
    stop signal ends it with 128 + the signal's number after a checkpoint."""
    import os
    import sys

    from decomp.config import load_config
    from decomp.launch import (
        ALLOW_SINGLETON,
        check_launch,
        configure_threads,
        stale_start_state,
        start_deadline,
    )
    from decomp.log import setup_logging
    from decomp.runner import format_table, run
    from decomp.runner.guard import arm
    from decomp.runner.lifecycle import SIGNALS, STOP_SIGNALS, Interrupted

    problem = stale_start_state()  # before MPI_Init, which it would hang
    if problem is not None:
        rank = os.environ.get("PMI_RANK", os.environ.get("SLURM_PROCID", "?"))
        print(f"[rank {rank}] ERROR: {problem}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    started = start_deadline()  # MPI_Init and the first collective, or a message and exit
    SIGNALS.__enter__()  # from here on a stop signal ends the job with 128 + its number
    arm(SIGNALS, STOP_SIGNALS)  # parent-death SIGKILL; a signal while in native code
    try:
        comm = world()
    except Interrupted as e:  # before MPI is up: this process alone
        return e.exit_code
    setup_logging(comm.Get_rank(), comm.Get_size())
    try:
        if args.single_rank:
            os.environ[ALLOW_SINGLETON] = "1"
        check_launch(comm)  # logs SLURM/MPI context; refuses N one-rank copies under srun
        started()
        configure_threads(comm, args.threads)
        cfg = load_config(args.config, overrides(args))
        mode = ({"always": "resume", "auto": "auto"}[args.resume] if args.resume
                else "overwrite" if args.overwrite else "new")
        results = run(cfg, comm, progress=False if args.no_progress else None, mode=mode,
                      resume_hint=resume_command(args, comm.Get_size()))
    except Interrupted as e:  # agreed: every rank, at the same step, after the checkpoint
        if not e.agreed:  # this rank alone, before the loop: end the job now
            return fail(comm, str(e), code=e.exit_code)
        if comm.Get_rank() == 0:
            print(f"interrupted: {e}; outputs and checkpoint in {cfg.out_dir}/{cfg.name}/ "
                  f"(continue with: {resume_command(args, comm.Get_size())})", flush=True)
        return e.exit_code
    except DecompError as e:
        return fail(comm, str(e))
    except OSError as e:  # a file the run reads or writes: name it and the cause
        where = f" {e.filename}" if e.filename else ""
        return fail(comm, f"cannot access{where}: {e.strerror or e} (errno {e.errno}); check "
                    "the path, its permissions and the free space")
    except BaseException:  # noqa: BLE001 (KeyboardInterrupt, SystemExit: end every rank too)
        return fail(comm, "unexpected error\n" + traceback.format_exc())
    if comm.Get_rank() == 0:
        print(format_table(results), flush=True)
        print(f"outputs: {cfg.out_dir}/{cfg.name}/ (config.toml, metrics.jsonl, summary.json)")
    return EXIT_DIVERGED if any(r.status == "diverged" for r in results) else 0
