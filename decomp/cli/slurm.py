"""``decomp slurm``: write a ready sbatch script from a template in ``jobs/slurm/``; --submit.

Examples::

    decomp slurm jobs/configs/ef21_a9a.toml                     # runs/slurm/decomp-ef21-a9a.sbatch
    decomp slurm jobs/configs/ef21_a9a.toml --nodes 2 --ntasks-per-node 16 --time 02:00:00 \\
        --partition compute --account myproj --submit
    decomp slurm jobs/configs/ef21_a9a_sweep.toml --submit       # job array, one task per setting
    decomp slurm jobs/configs/ef21_a9a.toml --sweep 'methods.0.lr_multiplier=[1, 4, 16]' \\
        --sweep 'methods.0.compressor=[{kind="topk", k=1}, {kind="topk", k=8}]' --array 0-5%2
    decomp slurm jobs/configs/decentralized.toml --launcher mpiexec --venv '' \\
        --module openmpi/4.1.5 --module python/3.11 --script -  # print, cluster MPI

The template is chosen from the config (sweep, decentralized, torch, else ef21) unless
--template names one. Options left out keep the template's values (1 node, 4 tasks per node,
1 CPU per task, 00:30:00, the cluster's default partition). See docs/running.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from decomp.errors import DecompError

__all__ = ["add_parser", "cmd_slurm"]


def add_parser(subparsers: Any) -> None:
    """Register the ``slurm`` subcommand on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "slurm", help="write a ready sbatch script from jobs/slurm/ templates (--submit: sbatch)",
        description="Write a ready-to-submit SLURM batch script for a decomp config (or a sweep "
                    "file) from a template in jobs/slurm/, with every value checked first.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:" + (__doc__ or "").split("Examples::", 1)[1],
    )
    p.add_argument("config", help="decomp run config (TOML), or a sweep file with [grid]")
    g = p.add_argument_group("allocation (#SBATCH lines)")
    g.add_argument("--nodes", "-N", type=int, help="nodes (default: the template's, 1)")
    g.add_argument("--ntasks-per-node", type=int, metavar="M",
                   help="MPI ranks per node (default: the template's, 4)")
    g.add_argument("--cpus-per-task", "-c", type=int, metavar="C",
                   help="cores per rank; sets OMP_NUM_THREADS (default: the template's)")
    g.add_argument("--time", "-t", metavar="HH:MM:SS", help="time limit (default: the template's)")
    g.add_argument("--partition", "-p", help="partition (default: the cluster's default)")
    g.add_argument("--account", "-A", help="account to charge")
    g.add_argument("--job-name", "-J", help="job name (default: decomp-<config name>)")
    g.add_argument("--output", "-o", metavar="PATTERN",
                   help="job log (default: <out>/slurm/%%x-%%j.out, arrays %%x-%%A_%%a.out)")
    g.add_argument("--array", "-a", metavar="SPEC",
                   help="array task ids of a sweep, e.g. 0-5 or 0-5%%2 (default: all settings)")
    g.add_argument("--sbatch", action="append", default=[], metavar="--KEY=VALUE",
                   help="any other #SBATCH option, e.g. --sbatch=--qos=debug (repeatable)")
    r = p.add_argument_group("what runs")
    r.add_argument("--template", help="ef21 | decentralized | torch | sweep, or a path "
                   "(default: chosen from the config)")
    r.add_argument("--sweep", action="append", default=[], metavar="KEY=[V1, V2, ...]",
                   help="sweep a config key over values, one array task per combination "
                   "(repeatable)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override passed to decomp run (repeatable)")
    r.add_argument("--steps", type=int, help="override run.steps")
    r.add_argument("--out", help="outputs directory (default: the config's out_dir, 'runs')")
    r.add_argument("--data-dir", help="LIBSVM directory (default: $DECOMP_DATA at render "
                   "time, when the config sets no data_dir)")
    r.add_argument("--launcher", choices=("srun", "mpiexec"), default="srun",
                   help="srun --mpi=<plugin> (default) or mpiexec inside the allocation")
    r.add_argument("--mpi", default="pmi2", metavar="PLUGIN",
                   help="srun's PMI plugin (default: pmi2, right for the MPICH wheel)")
    r.add_argument("--venv", help="venv to put on PATH in the job ('' for none: modules); "
                   "default: the venv running this command")
    r.add_argument("--module", action="append", default=[], metavar="NAME",
                   help="`module load NAME` in the job (repeatable)")
    o = p.add_argument_group("result")
    o.add_argument("--script", metavar="PATH",
                   help="where to write the script ('-' for stdout; default: "
                   "<out>/slurm/<job name>.sbatch)")
    o.add_argument("--submit", action="store_true", help="submit it with sbatch")
    o.add_argument("--list-tasks", action="store_true",
                   help="print each task of a sweep as a shell-quoted line 'TASK decomp-run-"
                   "arguments...' and write no script (jobs/local/sweep.sh runs these)")
    p.set_defaults(func=cmd_slurm)


def _default_venv() -> str:
    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        return sys.prefix
    repo_venv = Path(__file__).resolve().parents[1] / ".venv"
    return str(repo_venv) if (repo_venv / "bin").is_dir() else ""


def build_spec(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(JobSpec, Source, Config) from parsed arguments; every config setting loaded and checked.
    """
    from decomp.config import load_config
    from decomp.errors import ConfigError
    from decomp.slurm import JobSpec, choose_template, find_template, load_source

    src = load_source(args.config, args.sweep)
    template = find_template(args.template or choose_template(src))
    run_args: list[str] = []
    sets = [*src.base_sets, *args.set]
    if args.steps is not None:
        if args.steps < 0:
            raise ConfigError(f"--steps must be >= 0, got {args.steps}")
        sets.append(f"run.steps={args.steps}")
    for s in sets:
        run_args += ["--set", s]
    settings = src.settings()
    for setting in settings or [[]]:
        cfg = load_config(src.config, [*sets, *setting])  # a typo fails now, not in the queue
    out = Path(args.out or cfg.out_dir).expanduser().resolve()
    data_dir = args.data_dir
    if data_dir is None and cfg.data_dir is None and os.environ.get("DECOMP_DATA"):
        data_dir = os.environ["DECOMP_DATA"]
    if data_dir is not None:
        run_args += ["--data-dir", str(Path(data_dir).expanduser().resolve())]
    job_name = args.job_name or (f"decomp-{src.sweep_name}" if src.is_sweep
                                 else f"decomp-{cfg.name}")
    log = "%x-%A_%a.out" if src.is_sweep else "%x-%j.out"
    output = args.output or str(out / "slurm" / log)
    if not output.startswith("/"):
        output = str(Path.cwd() / output)
    array = args.array if args.array is not None or not src.is_sweep \
        else f"0-{len(settings) - 1}"
    venv = _default_venv() if args.venv is None else args.venv
    if venv:
        venv = str(Path(venv).expanduser().resolve())
    argv = sys.argv[2:] if sys.argv[1:2] == ["slurm"] else [args.config]
    command = "decomp slurm " + " ".join(shlex.quote(a) for a in argv).replace("\n", " ")
    spec = JobSpec(config=src.config, template=template, job_name=job_name, output=output,
                   out_dir=str(out), nodes=args.nodes, ntasks_per_node=args.ntasks_per_node,
                   cpus_per_task=args.cpus_per_task, time=args.time, partition=args.partition,
                   account=args.account, array=array, sbatch_extra=list(args.sbatch),
                   run_args=run_args, venv=venv, modules=list(args.module),
                   launcher=args.launcher, srun_mpi=args.mpi, sweep_name=src.sweep_name,
                   settings=settings, command=command)
    spec.validate()
    return spec, src, cfg


def task_lines(args: argparse.Namespace) -> list[str]:
    """``--list-tasks``: one line per sweep task, ``TASK CONFIG --out OUT/SWEEP --set
    name="TASK" --set ...``, shell-quoted; every task's config loaded and checked first."""
    from decomp.config import load_config
    from decomp.errors import ConfigError
    from decomp.slurm import load_source

    src = load_source(args.config, args.sweep)
    if not src.is_sweep:
        raise ConfigError(f"{args.config} is not a sweep: --list-tasks needs a sweep file "
                          "(config + [grid]) or --sweep KEY=[...]")
    extra = list(args.set)
    if args.steps is not None:
        extra.append(f"run.steps={args.steps}")
    lines = []
    for task in range(len(src.settings())):
        sets = [f'name="{task}"', *src.task_overrides(task), *extra]
        cfg = load_config(src.config, sets)
        out = Path(args.out or cfg.out_dir) / str(src.sweep_name)
        words = [str(task), str(src.config), "--out", str(out)]
        if args.data_dir:
            words += ["--data-dir", args.data_dir]
        for s in sets:
            words += ["--set", s]
        lines.append(" ".join(shlex.quote(w) for w in words))
    return lines


def cmd_slurm(args: argparse.Namespace) -> int:
    """Render (and with --submit, submit) the batch script; 1 on a bad value."""
    from decomp.slurm import log_path, render, sbatch_options, submit

    try:
        if args.list_tasks:
            print("\n".join(task_lines(args)))
            return 0
        spec, src, cfg = build_spec(args)
        text = render(spec.template.read_text(), spec)
        if args.script == "-":
            sys.stdout.write(text)
            if not args.submit:
                return 0
        opts = sbatch_options(text)
        script = Path(args.script if args.script not in (None, "-")
                      else Path(spec.out_dir) / "slurm" / f"{spec.job_name}.sbatch")
        script = script.expanduser().resolve()
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(text)
        script.chmod(0o755)
        log_dir = Path(spec.output).parent
        if "%" not in str(log_dir):
            log_dir.mkdir(parents=True, exist_ok=True)  # sbatch does not create it
        info = sys.stderr if args.script == "-" else sys.stdout
        launch = (f"srun --mpi={spec.srun_mpi} --kill-on-bad-exit=1" if spec.launcher == "srun"
                  else "mpiexec -n $SLURM_NTASKS")
        print(f"wrote {script} (template {spec.template.name})", file=info)
        print(f"  {opts.get('nodes', '?')} node(s) x {opts.get('ntasks-per-node', '?')} "
              f"task(s) per node, {opts.get('cpus-per-task', '1')} CPU(s) per task, time "
              f"{opts.get('time', 'default')}, partition {opts.get('partition', '(default)')}; "
              f"launch: {launch}", file=info)
        target = (f"{spec.out_dir}/{spec.sweep_name}/<array task>/" if src.is_sweep
                  else f"{spec.out_dir}/{cfg.name}/")
        print(f"  outputs: {target}  log: {spec.output.replace('%x', spec.job_name)}",
              file=info)
        if src.is_sweep:
            for i, setting in enumerate(spec.settings):
                print(f"  task {i}: {' '.join(setting)}", file=info)
        if spec.launcher == "srun" and spec.srun_mpi == "none":
            print("  warning: --mpi none gives MPI no PMI: each task is a one-rank world and "
                  "decomp run refuses to start (use pmi2)", file=info)
        if not args.submit:
            print(f"submit with: sbatch {script}", file=info)
            return 0
        job_id = submit(script)
        first = 0 if src.is_sweep else None
        log = log_path(spec.output, job_id, spec.job_name, first)
        print(f"submitted batch job {job_id}; log {log}"
              f"{' (one per array task)' if src.is_sweep else ''}; watch: squeue -j {job_id}",
              file=info, flush=True)
        return 0
    except DecompError as e:
        print(f"decomp slurm: ERROR: {e}", file=sys.stderr)
        return 1

