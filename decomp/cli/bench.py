"""``decomp bench``: the benchmark sub-command (argparse).

Wire it into the main CLI with ``decomp.cli.bench.add_parser(subparsers)``; it registers
``bench`` with a positional target (``kernels``, the default, or ``step``) and sets
``func=run_bench``. Standalone: ``python -m decomp.cli.bench kernels --sizes 1e5,1e6``.

``decomp bench link`` (under MPI) measures one link's latency and bandwidth through the
transport and checks them against the configured rate and delay (:mod:`decomp.bench.link`).

``decomp bench step`` runs under MPI (``mpiexec -n 4 decomp bench step --model mlp``): one
training step of each decomp method and of PyTorch DDP, interleaved (:mod:`decomp.bench.step`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

TARGETS = ("kernels", "step", "link")


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
        "bench", help="benchmark the compression kernels or a training step",
        description="kernels: time encode/decode of every compressor on float32 vectors and "
                    "compare with one memory-bandwidth pass (np.copyto) and, for Top-k, with "
                    "numpy argpartition and torch.topk (single-threaded; minimum over --repeat "
                    "runs). step (under mpiexec): time one training step of each decomp method "
                    "and of PyTorch DDP (gloo: plain, fp16 hook, PowerSGD hook) on the same "
                    "model, data and ranks, interleaved; median, spread, ratio to DDP, bytes "
                    "per rank per step and the compute/compress/comm split.")
    p.add_argument("target", nargs="?", default="kernels", choices=TARGETS,
                   help="what to benchmark (default: kernels)")
    p.add_argument("--sizes", type=parse_sizes, default=None,
                   help="comma-separated vector lengths (kernels, default 1e5,1e6,2.5e7) or "
                        "payload bytes (link, default 8,65536,1048576,4194304,8388608)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per measurement "
                   "(the minimum is reported; default 5)")
    p.add_argument("--only", default=None,
                   help="comma-separated substrings of compressor labels to run (e.g. topk,qsgd)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the argpartition / torch.topk comparison")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the rows as JSON to PATH")
    step = p.add_argument_group("step (decomp bench step, under mpiexec)")
    step.add_argument("--model", default="mlp",
                      help="mlp (1024-2048-2048-10, d = 6.3 M; default), mlp-medium, mlp-small, "
                           "resnet20")
    step.add_argument("--methods", default=None,
                      help="comma-separated method labels (default: all; see decomp.bench.step)")
    step.add_argument("--steps", type=int, default=5, help="steps per method per round")
    step.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    step.add_argument("--warmup", type=int, default=3, help="untimed steps per method first")
    step.add_argument("--batch", type=int, default=32, help="minibatch rows per rank per step")
    link = p.add_argument_group("link (decomp bench link, under mpiexec)")
    link.add_argument("--delay-ms", type=float, default=0.0,
                      help="emulated one-way delay per message hop, as [network] delay_ms")
    link.add_argument("--expect-rate", default=None,
                      help="the link's configured rate (tc units: 100mbit, 1gbit); the fit is "
                           "checked against it (exit 1 when off by > 20 %%)")
    link.add_argument("--peer", type=int, default=None,
                      help="the rank paired with rank 0 (default size // 2: the other host)")
    p.set_defaults(func=run_bench)
    return p


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark selected by ``args``; print the table; return an exit code."""
    if args.target == "step":
        return run_step(args)
    if args.target == "link":
        return run_link(args)
    from decomp import bench

    if args.repeat < 1:
        print("decomp bench: --repeat must be >= 1", file=sys.stderr)
        return 2
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    print(f"# {bench.machine_info()}")
    print(f"# single thread, min of {args.repeat} runs; x: float32 N(0,1); ratios are "
          "time / np.copyto time on the same vector")
    print(bench.HEADER)
    rows = bench.run_kernels(args.sizes or [100_000, 1_000_000, 25_000_000], args.repeat, only=only,
                             baselines=not args.no_baselines, log=_log_progress)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": bench.machine_info(), "rows": [r.as_dict() for r in rows]},
                      f, indent=1)
    return 0


def run_step(args: argparse.Namespace) -> int:
    """``decomp bench step``: every rank runs it; rank 0 prints the table (and the JSON)."""
    from mpi4py import MPI

    from decomp import bench
    from decomp.bench import step as bench_step
    from decomp.launch import configure_threads

    comm = MPI.COMM_WORLD
    configure_threads(comm)
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    unknown = [m for m in methods or () if m not in bench_step.METHODS]
    if unknown:
        if comm.Get_rank() == 0:
            print(f"decomp bench step: unknown method(s) {unknown}; known: "
                  f"{', '.join(bench_step.METHODS)}", file=sys.stderr)
        return 2
    root = comm.Get_rank() == 0
    if root:
        print(f"# {bench.machine_info()}")
        print(f"# decomp bench step --model {args.model}: {comm.Get_size()} ranks, batch "
              f"{args.batch}, {args.rounds} rounds x {args.steps} steps (after {args.warmup} "
              "warm-up steps); median / min-max over rounds of the slowest rank's mean step "
              "time; bytes: mean over ranks per step; split: ms per step, slowest rank")
    rows = bench_step.run_step_bench(comm, model=args.model, methods=methods, steps=args.steps,
                                     rounds=args.rounds, warmup=args.warmup, batch=args.batch,
                                     log=_log_progress if root else None)
    if root:
        print(bench_step.format_table(rows), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": bench.machine_info(), "model": args.model,
                           "ranks": comm.Get_size(), "batch": args.batch,
                           "rows": [r.as_dict() for r in rows]}, f, indent=1)
    return 0


def run_link(args: argparse.Namespace) -> int:
    """``decomp bench link``: every rank runs it; rank 0 prints the fit (and the JSON)."""
    from mpi4py import MPI

    from decomp.bench import link as bench_link
    from decomp.errors import ConfigError
    from decomp.netmodel.calibrate import parse_rate

    comm = MPI.COMM_WORLD
    root = comm.Get_rank() == 0
    try:
        expect = parse_rate(args.expect_rate) if args.expect_rate else None
        if args.repeat < 1 or not args.delay_ms >= 0:
            raise ValueError("--repeat must be >= 1 and --delay-ms >= 0")
        fit = bench_link.run_link_bench(
            comm, sizes=tuple(args.sizes or bench_link.SIZES), repeat=args.repeat,
            delay_ms=args.delay_ms, peer=args.peer, expect_rate_Bps=expect)
    except (ValueError, ConfigError) as e:
        if root:
            print(f"decomp bench link: {e}", file=sys.stderr)
        return 2
    if fit is None:
        return 0
    print(bench_link.format_fit(fit), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(fit.as_dict(), f, indent=1)
    bad = fit.check()
    for line in bad:
        print(f"decomp bench link: {line}", file=sys.stderr)
    return 1 if bad else 0


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
