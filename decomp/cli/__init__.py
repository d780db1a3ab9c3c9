"""``decomp`` command line: run | sim | plot | compare | info | topo | bench | slurm | model.

One module per sub-command (named like it), each with ``add_parser(subparsers)``; they are
imported by name with :func:`importlib.import_module`, so a broken import is an error, never a
silently missing command. ``decomp COMMAND ...`` imports only COMMAND's module (a rank of
``decomp run`` does not pay for ``topo``'s or ``model``'s imports); ``decomp``, ``decomp -h``
or an unknown command build the full parser. Under MPI every
rank runs the same command; any error on any rank is printed with the rank and ends the whole
job (``MPI.COMM_WORLD.Abort``), so no rank is left waiting in a collective.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from decomp.cli._common import EXIT_DIVERGED, EXIT_ERROR, EXIT_USAGE
from decomp.threads import preset_threads

#: the sub-commands in help order; each is the module ``decomp.cli.<name>``
SUBCOMMANDS = ("run", "sim", "plot", "compare", "info", "topo", "bench", "slurm", "model")


def build_parser(commands: Sequence[str] = SUBCOMMANDS) -> argparse.ArgumentParser:
    """The ``decomp`` parser with the sub-commands ``commands`` (default: all)."""
    p = argparse.ArgumentParser(
        prog="decomp", description="decomp: communication-compressed distributed training on "
        "MPI (EF21 family and compressed gossip).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands:
        importlib.import_module(f"decomp.cli.{name}").add_parser(sub)
    return p


def _commands_for(argv: Sequence[str]) -> Sequence[str]:
    """Only the named sub-command when ``argv`` starts with one, else all (help, errors)."""
    return (argv[0],) if argv and argv[0] in SUBCOMMANDS else SUBCOMMANDS


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_commands_for(argv))
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    # before numpy/numba/torch start their pools: cores ÷ the launcher's ranks on this node
    preset_threads(threads=getattr(args, "threads", None))
    # The interpreter's own exit follows (no os._exit after MPI_Finalize to skip the module
    # teardown: with it, 3 of 16 `mpiexec -n 4 decomp run` ended with a rank SIGKILLed at exit)
    return int(args.func(args))


__all__ = ["EXIT_DIVERGED", "EXIT_ERROR", "EXIT_USAGE", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
