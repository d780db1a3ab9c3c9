"""``decomp plot RUN_DIR... -o FIG.png``: curves of run folders (or of folders of them), one
line per method per run; matplotlib on the Agg canvas, no display and no MPI needed.

Examples::

    decomp plot runs/ef21-a9a -x bits -y grad_norm_sq -o ef21.png -o ef21.pdf
    decomp plot runs/decentralized -x step -x bytes -y loss -y consensus_distance -o dec.png
    decomp plot runs/ef21-sweep --best grad_norm_sq --over lr_multiplier --panel dataset \\
        -x bits -o best.png
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from decomp.cli._common import EXIT_ERROR, documented_parser
from decomp.errors import DecompError


def add_parser(sub: Any) -> None:
    p = documented_parser(
        sub, "plot", "draw run folders: metrics against steps, bits, bytes or wall time", __doc__)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run folders, or folders holding run folders (searched recursively); "
                   "with several, a method name found in more than one has its folder in the "
                   "legend")
    p.add_argument("-o", "--output", action="append", required=True, metavar="FIG",
                   help="figure file, .png, .pdf or .svg (repeatable: one figure, several files)")
    p.add_argument("-x", action="append", metavar="COLUMN",
                   help="step (default) | bits (sent per worker) | bits_total (sent + "
                   "received) | bytes | time (wall_s) | any metrics column; repeatable: one "
                   "column of axes each (bits and bytes on a log axis unless --xscale)")
    p.add_argument("-y", action="append", metavar="COLUMN",
                   help="loss | grad_norm_sq | test_acc | consensus_distance | any metrics "
                   "column; repeatable: one row of axes each (default: grad_norm_sq for "
                   "numpy problems, loss for torch runs)")
    p.add_argument("--panel", metavar="KEY",
                   help="one column of axes per value of this setting (e.g. dataset)")
    p.add_argument("--best", metavar="METRIC",
                   help="draw only the best of each group of runs differing in --over (by "
                   "final METRIC, as decomp compare --best)")
    p.add_argument("--over", metavar="KEY", default="lr_multiplier",
                   help="the swept setting for --best (default: lr_multiplier)")
    p.add_argument("--only", action="append", metavar="TEXT", default=[],
                   help="draw only methods whose label contains TEXT (repeatable: any of them)")
    p.add_argument("--xscale", choices=("linear", "log"),
                   help="default: log for bits and bytes, linear for steps and time")
    p.add_argument("--yscale", choices=("linear", "log"),
                   help="default: log when the values are positive and span > 20x")
    p.add_argument("--title", help="figure title (default: what the runs share: dataset, n, "
                   "topology (decentralized runs), compressor)")
    p.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    from decomp.report import all_methods, best_groups, find_runs, labels, plot_methods

    try:
        methods = all_methods(find_runs(args.runs))
        if args.only:
            names = labels(methods)
            methods = [m for m, n in zip(methods, names, strict=True)
                       if any(t in n for t in args.only)]
        if args.best:
            methods = [b for _, b in best_groups(methods, args.best, args.over) if b is not None]
        plot_methods(methods, args.output, x=args.x or ["step"], y=args.y,
                     panel=args.panel, xscale=args.xscale, yscale=args.yscale,
                     heading=args.title, drop=[args.over] if args.best else [], dpi=args.dpi,
                     run_in_legend=len(args.runs) > 1)
    except DecompError as e:
        print(f"decomp plot: ERROR: {e}", file=sys.stderr)
        return EXIT_ERROR
    for path in args.output:
        print(f"wrote {path}")
    return 0
