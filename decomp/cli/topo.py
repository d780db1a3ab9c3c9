"""``decomp topo``: build a topology, print its mixing matrix's spectral summary.

Examples::

    decomp topo ring 8
    decomp topo torus 12 --rows 3 --weights max-degree
    decomp topo random-regular 64 --degree 3 --seed 1 --save W.npy
    decomp topo edge-list 6 --file graph.txt
    decomp topo matrix 4 --file W.npy          # or: decomp topo W.npy 4
    decomp topo one-peer-exponential 8 --step 2
    decomp topo exponential 256 --brief        # one tab-separated line (for tables)
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from typing import Any

import numpy as np

from decomp.topologies import (
    GRAPH_GENERATORS,
    WEIGHT_SCHEMES,
    MixingMatrix,
    OnePeerExponential,
    TopologyError,
    is_matrix_file,
    mixing_matrix,
)
from decomp.topologies.factory import SCHEDULE_KINDS
from decomp.topologies.graphs import canonical_kind

__all__ = ["SHOW_W_MAX_N", "add_parser", "mixing_from_args", "run_topo"]

#: W is printed by default up to this n (``--show-w`` forces it, ``--hide-w`` suppresses it).
SHOW_W_MAX_N = 16

_MATRIX_KINDS = ("matrix", "w-file")


def add_parser(subparsers: Any) -> None:
    """Register the ``topo`` subcommand on an ``argparse`` subparsers object."""
    kinds = [*GRAPH_GENERATORS, *SCHEDULE_KINDS, *_MATRIX_KINDS]
    p = subparsers.add_parser(
        "topo",
        help="build a topology and print n, edges, degrees, rho and the spectral gap",
        description="Build a graph and its mixing matrix W; print n, edge count, degree range, "
                    "rho = max(|lambda_2|, |lambda_n|), the spectral gap 1 - rho and, for small "
                    "n, W. KIND is one of: " + ", ".join(kinds) + " (aliases such as 'er' work), "
                    "or a path to a W file (.npy/.npz/text).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1] if __doc__ else None,
    )
    p.add_argument("kind", help="generator name, 'matrix' (W from --file) or a W file path")
    p.add_argument("n", type=int, help="number of nodes (ranks)")
    p.add_argument("--weights", default="metropolis",
                   help="weighting: " + ", ".join(WEIGHT_SCHEMES) + " (default: metropolis)")
    p.add_argument("--rows", type=int, default=None, help="torus: rows")
    p.add_argument("--cols", type=int, default=None, help="torus: columns")
    p.add_argument("--degree", type=int, default=None,
                   help="random-regular: degree (default min(4, n-1))")
    p.add_argument("--p", type=float, default=None,
                   help="erdos-renyi: edge probability (default 2 ln(n)/n)")
    p.add_argument("--seed", type=int, default=None, help="random graphs: seed (default 0)")
    p.add_argument("--max-tries", type=int, default=None,
                   help="random graphs: attempts to get a connected graph (default 100)")
    p.add_argument("--center", type=int, default=None, help="star: centre node (default 0)")
    p.add_argument("--step", type=int, default=None, help="one-peer schedules: step t")
    p.add_argument("--file", default=None, help="edge-list: edge file; matrix: W file")
    p.add_argument("--tol", type=float, default=None,
                   help="validation tolerance for sums/symmetry (default 1e-10 * n)")
    p.add_argument("--eig", choices=("auto", "dense", "sparse"), default="auto",
                   help="eigenvalue method (default: dense up to n = 2048, else ARPACK)")
    p.add_argument("--save", metavar="PATH", default=None,
                   help="write W (dense) to PATH: .npy, otherwise text")
    show = p.add_mutually_exclusive_group()
    show.add_argument("--show-w", action="store_true", help="print W whatever n is")
    show.add_argument("--hide-w", action="store_true", help="never print W")
    p.add_argument("--brief", action="store_true",
                   help="one tab-separated line: kind n weights edges deg_min deg_max rho gap")
    p.set_defaults(func=run_topo)


_FLAGS = {"rows": "--rows", "cols": "--cols", "degree": "--degree", "p": "--p",
          "seed": "--seed", "max_tries": "--max-tries", "center": "--center", "path": "--file"}


def mixing_from_args(args: argparse.Namespace) -> MixingMatrix:
    """The :class:`MixingMatrix` described by parsed ``topo`` arguments.

    Raises:
        TopologyError: unknown kind, a flag that does not apply to the kind, or invalid W.
    """
    kind = args.kind
    key = kind.strip().lower().replace("_", "-")
    opts: dict[str, object] = {name: getattr(args, name if name != "path" else "file")
                               for name in _FLAGS}
    given = [name for name, v in opts.items() if v is not None]
    if key in _MATRIX_KINDS or key in SCHEDULE_KINDS or is_matrix_file(kind):
        allowed = {"path"} if key in _MATRIX_KINDS else set()
        bad = [name for name in given if name not in allowed]
        if bad:
            raise TopologyError(f"{_FLAGS[bad[0]]} does not apply to {kind!r}")
        if key in _MATRIX_KINDS:
            if not args.file:
                raise TopologyError(f"{kind}: give the W file with --file")
            return mixing_matrix(args.file, args.n, args.weights, tol=args.tol)
        if key in SCHEDULE_KINDS:
            return mixing_matrix(key, args.n, step=args.step, tol=args.tol)
        return mixing_matrix(kind, args.n, args.weights, tol=args.tol)
    if args.step is not None:
        raise TopologyError(f"--step applies only to {', '.join(SCHEDULE_KINDS)}")
    gen = GRAPH_GENERATORS[canonical_kind(kind)]
    params = inspect.signature(gen).parameters
    for name in given:
        if name not in params:
            takes = [_FLAGS[q] for q in params if q in _FLAGS]
            raise TopologyError(f"{_FLAGS[name]} does not apply to {canonical_kind(kind)!r}; "
                                f"it takes: {', '.join(takes) or 'no options'}")
    return mixing_matrix(kind, args.n, args.weights, tol=args.tol, **opts)


def run_topo(args: argparse.Namespace) -> int:
    """Run ``decomp topo``; return the exit code (0 ok, 2 invalid topology)."""
    try:
        t0 = time.perf_counter()
        m = mixing_from_args(args)
        lam2, lamn, rho = m.spectrum(args.eig)
        elapsed = time.perf_counter() - t0
    except TopologyError as exc:
        print(f"decomp topo: error: {exc}", file=sys.stderr)
        return 2
    gap = 1.0 - rho
    if args.brief:
        print(f"{args.kind}\t{m.n}\t{args.weights}\t{m.num_edges}\t{m.degree_min}\t"
              f"{m.degree_max}\t{rho:.6f}\t{gap:.6f}")
    else:
        print(f"topology: {m.name}")
        print(f"n: {m.n}")
        print(f"edges: {m.num_edges}" + ("" if m.symmetric else " (directed arcs)"))
        print(f"degree: min {m.degree_min}, max {m.degree_max}, mean {m.degree_mean:.3f}")
        if m.symmetric:
            print(f"lambda_2: {lam2:.8f}   lambda_n: {lamn:.8f}")
            print(f"rho = max(|lambda_2|, |lambda_n|): {rho:.8f}")
        else:
            print(f"rho = ||W - 11^T/n||_2: {rho:.8f}  (W is not symmetric)")
        print(f"spectral gap 1 - rho: {gap:.8f}")
        key = args.kind.strip().lower().replace("_", "-")
        if key in SCHEDULE_KINDS:
            sched = OnePeerExponential(m.n, symmetric=(key == "one-peer-hypercube"))
            print(f"schedule: period tau = {sched.period} steps; over one period "
                  f"||W_(tau-1)...W_0 - 11^T/n||_2 = {sched.period_rho():.8f}")
        print(f"time (build + validate + spectrum): {elapsed:.3f} s")
        if args.show_w or (not args.hide_w and m.n <= SHOW_W_MAX_N):
            with np.printoptions(precision=4, suppress=True, linewidth=200,
                                 threshold=10**7):
                print("W =")
                print(m.dense())
    if args.save:
        try:
            m.save(args.save)
        except OSError as exc:
            print(f"decomp topo: error: cannot write {args.save}: {exc}", file=sys.stderr)
            return 1
        if not args.brief:
            print(f"saved W to {args.save}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m decomp.cli.topo ring 8``) until the main CLI wires it."""
    parser = argparse.ArgumentParser(prog="decomp")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["topo", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
