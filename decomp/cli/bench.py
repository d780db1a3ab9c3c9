"""``decomp bench``: the benchmark sub-command (argparse).

Wire it into the main CLI with ``decomp.cli.bench.add_parser(subparsers)``; it registers
``bench`` with a positional target (only ``kernels`` for now, the default) and sets
``func=run_bench``. Standalone: ``python -m decomp.cli.bench kernels --sizes 1e5,1e6``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

TARGETS = ("kernels",)


def parse_sizes(text: str) -> list[int]:
    """'1e5,1e6,2.5e7' -> [100000, 1000000, 25000000]."""
    try:
        sizes = [int(float(t)) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes takes numbers like 1e5,1e6, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--sizes must be positive, got {text!r}")
    return sizes


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``bench`` on an argparse sub-parser collection; returns the new parser."""
    p = subparsers.add_parser(
        "bench", help="benchmark the compression kernels",
        description="Time encode/decode of every compressor on float32 vectors and compare "
                    "with one memory-bandwidth pass (np.copyto) and, for Top-k, with numpy "
                    "argpartition and torch.topk. Single-threaded; minimum over --repeat runs.")
    p.add_argument("target", nargs="?", default="kernels", choices=TARGETS,
                   help="what to benchmark (default: kernels)")
    p.add_argument("--sizes", type=parse_sizes, default=[100_000, 1_000_000, 25_000_000],
                   help="comma-separated vector lengths (default: 1e5,1e6,2.5e7)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per measurement "
                   "(the minimum is reported; default 5)")
    p.add_argument("--only", default=None,
                   help="comma-separated substrings of compressor labels to run (e.g. topk,qsgd)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the argpartition / torch.topk comparison")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the rows as JSON to PATH")
    p.set_defaults(func=run_bench)
    return p


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark selected by ``args``; print the table; return an exit code."""
    from decomp import bench

    if args.repeat < 1:
        print("decomp bench: --repeat must be >= 1", file=sys.stderr)
        return 2
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    print(f"# {bench.machine_info()}")
    print(f"# single thread, min of {args.repeat} runs; x: float32 N(0,1); ratios are "
          "time / np.copyto time on the same vector")
    print(bench.HEADER)
    rows = bench.run_kernels(args.sizes, args.repeat, only=only,
                             baselines=not args.no_baselines, log=_log_progress)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": bench.machine_info(), "rows": [r.as_dict() for r in rows]},
                      f, indent=1)
    return 0


def _log_progress(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry: ``python -m decomp.cli.bench [kernels] [--sizes ...]``."""
    parser = argparse.ArgumentParser(prog="decomp")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
