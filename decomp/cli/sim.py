"""``decomp sim CONFIG --workers N``: a config through the single-process reference."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from decomp.cli._common import EXIT_DIVERGED, EXIT_ERROR
from decomp.cli.run import overrides
from decomp.errors import DecompError


def add_parser(sub: Any) -> None:
    s = sub.add_parser("sim", help="run a config with the single-process reference")
    s.add_argument("config", help="TOML config file")
    s.add_argument("--workers", type=int, required=True, help="number of simulated workers n")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key (dotted path), repeatable")
    s.add_argument("--data-dir", help="directory with LIBSVM files (default: $DECOMP_DATA)")
    s.add_argument("--steps", type=int, help="override run.steps")
    s.add_argument("--out", help="write config.toml, metrics.jsonl and summary.json to "
                   "OUT/<name>/ as decomp run does (default: print the table only)")
    s.set_defaults(func=cmd_sim)


def cmd_sim(args: argparse.Namespace) -> int:
    from decomp.config import load_config
    from decomp.runner import format_table, simulate_config

    try:
        cfg = load_config(args.config, overrides(args))
        results = simulate_config(cfg, args.workers, write=args.out is not None)
    except DecompError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(format_table(results))
    if args.out is not None:
        print(f"outputs: {cfg.out_dir}/{cfg.name}/ (config.toml, metrics.jsonl, summary.json)")
    return EXIT_DIVERGED if any(r.status == "diverged" for r in results) else 0
