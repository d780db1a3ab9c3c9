"""``decomp`` command line: run | sim | plot | compare | info | topo | bench | slurm | model.

One module per sub-command, each with ``add_parser(subparsers)``; they are imported
explicitly, so a broken import is an error, never a silently missing command. Under MPI every
rank runs the same command; any error on any rank is printed with the rank and ends the whole
job (``MPI.COMM_WORLD.Abort``), so no rank is left waiting in a collective.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from decomp.cli import bench, compare, info, model, plot, run, sim, slurm, topo
from decomp.cli._common import EXIT_DIVERGED, EXIT_ERROR, EXIT_USAGE

SUBCOMMANDS = (run, sim, plot, compare, info, topo, bench, slurm, model)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="decomp", description="decomp: communication-compressed distributed training on "
        "MPI (EF21 family and compressed gossip).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    return int(args.func(args))


__all__ = ["EXIT_DIVERGED", "EXIT_ERROR", "EXIT_USAGE", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
