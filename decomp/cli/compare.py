"""``decomp compare RUN_DIR...``: one table of the methods of run folders (or of folders of
them, e.g. a sweep): final metrics, steps / bits / time to targets, status; ``--best METRIC
--over KEY``: the best value of a swept setting per group. No MPI needed.

Examples::

    decomp compare runs/ef21-a9a runs/ef21-a9a-sim --target grad_norm_sq=1e-4
    decomp compare runs/ef21-a9a-sweep --best grad_norm_sq --over lr_multiplier \\
        --target grad_norm_sq=1e-4 --target grad_norm_sq=1e-6
    decomp compare runs/decentralized --csv results.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from decomp.cli._common import EXIT_ERROR, documented_parser
from decomp.errors import DecompError


def add_parser(sub: Any) -> None:
    c = documented_parser(
        sub, "compare", "table of run folders: final metrics, steps/bits/time to a target", __doc__)
    c.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run folders, or folders holding run folders (searched recursively)")
    c.add_argument("--target", action="append", default=[], metavar="COLUMN=VALUE",
                   help="steps/bits/time to the first logged row reaching it, e.g. "
                   "grad_norm_sq=1e-4 (at most) or test_acc>=0.9; repeatable")
    c.add_argument("--best", metavar="METRIC",
                   help="per group of runs differing only in --over: the value with the best "
                   "final METRIC (lowest; highest for accuracies)")
    c.add_argument("--over", metavar="KEY", default="lr_multiplier",
                   help="the swept setting for --best (default: lr_multiplier)")
    c.add_argument("--columns", metavar="A,B,...",
                   help="only these columns, in this order (default: every column with a value)")
    c.add_argument("--markdown", action="store_true", help="print a Markdown table")
    c.add_argument("--csv", metavar="PATH", help="also write the table as CSV ('-': stdout "
                   "instead of the text table)")
    c.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from decomp.report import (
        RunFolderError,
        all_methods,
        best_rows,
        compare_rows,
        find_runs,
        format_markdown,
        format_rows,
        parse_target,
        to_csv,
    )

    try:
        targets = [parse_target(t) for t in args.target]
        methods = all_methods(find_runs(args.runs))
        rows = (best_rows(methods, args.best, args.over, targets) if args.best
                else compare_rows(methods, targets))
        if args.columns:
            cols = [c.strip() for c in args.columns.split(",") if c.strip()]
            missing = [c for c in cols if rows and c not in rows[0]]
            if missing:
                raise RunFolderError(f"--columns: no column(s) {', '.join(missing)} (columns: "
                                     f"{', '.join(rows[0])})")
            rows = [{c: r[c] for c in cols} for r in rows]
    except DecompError as e:
        print(f"decomp compare: ERROR: {e}", file=sys.stderr)
        return EXIT_ERROR
    if args.csv == "-":
        sys.stdout.write(to_csv(rows))
        return 0
    print(format_markdown(rows) if args.markdown else format_rows(rows))
    if args.csv:
        Path(args.csv).write_text(to_csv(rows))
        print(f"wrote {args.csv}", file=sys.stderr)
    return 0
