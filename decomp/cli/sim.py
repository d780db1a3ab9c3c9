"""``decomp sim CONFIG --workers N``: a config through the single-process reference; a sweep
file (config + ``[grid]``, as ``decomp slurm`` and ``jobs/local/sweep.sh`` read it) runs every
grid point, each into its own run folder ``<out>/<sweep name>/<task>/``."""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from decomp.cli._common import EXIT_DIVERGED, EXIT_ERROR, quote
from decomp.cli.run import overrides
from decomp.errors import ConfigError, DecompError


def add_parser(sub: Any) -> None:
    s = sub.add_parser("sim", help="run a config (or a sweep) with the single-process reference")
    s.add_argument("config", help="TOML config file, or a sweep file (config + [grid])")
    s.add_argument("--workers", type=int, required=True, help="number of simulated workers n")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key (dotted path), repeatable")
    s.add_argument("--data-dir", help="directory with LIBSVM files (default: $DECOMP_DATA)")
    s.add_argument("--steps", type=int, help="override run.steps")
    s.add_argument("--out", help="write config.toml, metrics.jsonl (a row per log step) and "
                   "summary.json to OUT/<name>/ as decomp run does (default: print the table "
                   "only; a sweep always writes, to OUT/<sweep name>/<task>/, OUT default: the "
                   "config's out_dir)")
    s.add_argument("--node-layout", metavar="LAYOUT|RUN_DIR",
                   help="the node layout of the run to reproduce (aggregation = 'auto' and the "
                   "tree's sums follow it): ranks per node ('4'), the node sizes ('3,2,3'), "
                   "'flat', or a run folder of decomp run, whose summary.json recorded it "
                   "(default: DECOMP_NODE_LAYOUT, else one node)")
    s.add_argument("--overwrite", action="store_true",
                   help="with --out: replace the results of an existing OUT/<name>/ (as "
                   "decomp run --overwrite; without it an existing run folder is refused)")
    g = s.add_argument_group("sweeps")
    g.add_argument("--sweep", action="append", default=[], metavar="KEY=[V1, V2, ...]",
                   help="sweep a config key over values (repeatable; as decomp slurm --sweep)")
    g.add_argument("--tasks", metavar="SPEC",
                   help="only these tasks of the sweep, e.g. 0-5,8 (default: all)")
    g.add_argument("--jobs", "-j", type=int, default=1,
                   help="tasks run at once, in separate processes (default 1)")
    s.set_defaults(func=cmd_sim)


def cmd_sim(args: argparse.Namespace) -> int:
    from decomp.comm.nodes import use_layout
    from decomp.config import load_config
    from decomp.runner import format_table, simulate_config
    from decomp.slurm import load_source

    try:
        layout = node_layout(args.node_layout, args.workers)
        src = load_source(args.config, args.sweep)
        if src.is_sweep:
            return _sweep(args, src, layout)
        cfg = load_config(src.config, overrides(args))
        if args.overwrite and args.out is None:
            raise ConfigError("--overwrite needs --out (decomp sim writes a run folder only "
                              "with --out)")
        with use_layout(layout):
            results = simulate_config(cfg, args.workers, write=args.out is not None,
                                      mode="overwrite" if args.overwrite else "new")
    except DecompError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(format_table(results))
    if args.out is not None:
        print(f"outputs: {cfg.out_dir}/{cfg.name}/ (config.toml, metrics.jsonl, summary.json)")
    return EXIT_DIVERGED if any(r.status == "diverged" for r in results) else 0


def node_layout(value: str | None, n_workers: int) -> Any:
    """``--node-layout``: None (not given), the layout text, or the layout a run folder's
    ``summary.json`` recorded (``run.node_layout``); checked against ``n_workers``."""
    from decomp.comm.nodes import parse_layout

    if value is None:
        return None
    path = Path(value)
    layout: Any = value
    if path.is_dir():
        summary = path / "summary.json"
        try:
            run = json.loads(summary.read_text())["run"]
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"--node-layout {value}: no run summary to read ({summary}: "
                              f"{e}); give a run folder of decomp run or the layout itself "
                              "('4', '3,2,3', 'flat')") from None
        layout = run.get("node_layout")
        if layout is None:
            raise ConfigError(f"--node-layout {value}: {summary} records no node layout (a run "
                              "of decomp sim, or of a decomp before it recorded one); give the "
                              "layout itself ('4', '3,2,3', 'flat')")
    parse_layout(layout, n_workers)  # sizes that fit --workers, before anything runs
    return layout


def _task(config: str, sets: list[str], n_workers: int,
          mode: str = "new", layout: Any = None) -> tuple[str, list[Any]]:
    """One sweep task in this process: (run folder, results)."""
    from decomp.comm.nodes import use_layout
    from decomp.config import load_config
    from decomp.runner import simulate_config

    cfg = load_config(config, sets)
    with use_layout(layout):
        return f"{cfg.out_dir}/{cfg.name}", simulate_config(cfg, n_workers, write=True,
                                                            mode=mode)


def _sweep(args: argparse.Namespace, src: Any, layout: Any = None) -> int:
    from decomp.config import load_config
    from decomp.errors import ConfigError
    from decomp.slurm import parse_array

    n = len(src.settings())
    tasks = parse_array(args.tasks) if args.tasks else list(range(n))
    if any(t >= n for t in tasks):
        raise ConfigError(f"--tasks {args.tasks}: sweep {src.sweep_name} has tasks 0-{n - 1}")
    base = [s for s in overrides(args) if not s.startswith("out_dir=")]
    out = Path(args.out or load_config(src.config, base).out_dir) / str(src.sweep_name)
    jobs: dict[int, list[str]] = {}
    for t in tasks:
        sets = [*src.task_overrides(t), *base, f"name={quote(str(t))}",
                f"out_dir={quote(str(out))}"]
        load_config(src.config, sets)  # every task's config is valid before any runs
        jobs[t] = sets
    print(f"sweep {src.sweep_name}: {len(tasks)} task(s) of {n}, {args.workers} workers, "
          f"outputs in {out}/<task>/", flush=True)
    diverged = 0
    pool = ProcessPoolExecutor(max_workers=args.jobs) if args.jobs > 1 else None
    try:
        mode = "overwrite" if args.overwrite else "new"
        pending = {t: pool.submit(_task, str(src.config), sets, args.workers, mode, layout)
                   if pool else None for t, sets in jobs.items()}
        for t, fut in pending.items():
            where, results = fut.result() if fut else _task(str(src.config), jobs[t],
                                                            args.workers, mode, layout)
            diverged += any(r.status == "diverged" for r in results)
            summary = "; ".join(f"{r.method}: {r.status}, ||grad f||^2 {r.grad_norm_sq:.3e}"
                                for r in results)
            print(f"task {t} [{' '.join(src.settings()[t])}] -> {where}: {summary}", flush=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    print(f"sweep {src.sweep_name}: {len(tasks)} task(s), {diverged} with a diverged method; "
          f"compare with: decomp compare {out}")
    return 0
