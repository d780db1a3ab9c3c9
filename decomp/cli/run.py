"""``decomp run CONFIG``: every method of a config on MPI (launch with mpiexec/srun)."""

from __future__ import annotations

import argparse
import traceback
from typing import Any

from decomp.cli._common import EXIT_DIVERGED, fail, quote, world
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
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from decomp.config import load_config
    from decomp.launch import check_launch, configure_threads
    from decomp.log import setup_logging
    from decomp.runner import format_table, run

    comm = world()
    setup_logging(comm.Get_rank(), comm.Get_size())
    try:
        check_launch(comm)  # logs SLURM/MPI context; refuses N one-rank copies under srun
        configure_threads(comm, args.threads)
        cfg = load_config(args.config, overrides(args))
        results = run(cfg, comm, progress=False if args.no_progress else None)
    except DecompError as e:
        return fail(comm, str(e))
    except Exception:
        return fail(comm, "unexpected error\n" + traceback.format_exc())
    if comm.Get_rank() == 0:
        print(format_table(results), flush=True)
        print(f"outputs: {cfg.out_dir}/{cfg.name}/ (config.toml, metrics.jsonl, summary.json)")
    return EXIT_DIVERGED if any(r.status == "diverged" for r in results) else 0
