"""``decomp model CONFIG --ranks N``: the cost model's step time and time to target.

Per method of the config, per topology and rank count: bytes on the busiest link per step,
the step split into communication (hops·α + bytes/β over the step's calls), compression and
computation, the steps to target (measured with ``decomp sim`` at a small n and scaled by the
spectral gap where the theory gives it — docs/netmodel.md) and the predicted time to target.
No MPI: the prediction runs in one process.

Examples::

    decomp model jobs/configs/demo.toml --ranks 64 --rate 1gbit --delay 1ms
    decomp model jobs/configs/decentralized.toml --ranks 64 --ranks 1024 --ranks 16384 \\
        --topology ring --topology torus --topology exponential --topology complete \\
        --rate 100mbit --delay 1ms --sim-curve runs/decentralized --target 1e-3
    decomp model jobs/configs/ef21_a9a.toml --ranks 8 --link link.json --hops emulated \\
        --compute-ms 0.4 --json model.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from decomp.cli._common import EXIT_ERROR, documented_parser, quote
from decomp.errors import DecompError

__all__ = ["add_parser", "cmd_model", "format_brief", "format_rows"]


def add_parser(sub: Any) -> None:
    from decomp.netmodel.patterns import ALLREDUCE_ALGORITHMS, HOPS

    p = documented_parser(sub, "model", "predict step time and time to target on a network "
                          "(the cost model)", __doc__)
    p.add_argument("config", help="TOML config file")
    p.add_argument("--ranks", type=int, action="append", required=True, metavar="N",
                   help="number of workers / nodes (repeatable)")
    net = p.add_argument_group("network")
    net.add_argument("--rate", help="link rate, e.g. 1gbit, 100mbit, 125MB/s (β = rate/8)")
    net.add_argument("--delay", help="one-way delay per message hop, e.g. 1ms, 200us "
                     "(α = delay + base latency)")
    net.add_argument("--link", metavar="FILE", help="α, β from decomp bench link --json FILE "
                     "(--rate/--delay override them)")
    net.add_argument("--base-latency-us", type=float, default=30.0,
                     help="the MPI stack's own latency added to --delay, µs (default 30)")
    net.add_argument("--topology", action="append", metavar="KIND",
                     help="ring | torus | exponential | complete (repeatable; default: the "
                     "config's)")
    net.add_argument("--allreduce", choices=ALLREDUCE_ALGORITHMS, default="rabenseifner",
                     help="all-reduce algorithm (default rabenseifner, MPICH's for long "
                     "messages)")
    net.add_argument("--ranks-per-node", type=int, default=1, metavar="Q",
                     help="ranks per node: aggregation = 'tree' sums within each node over "
                     "shared memory first (default 1: every rank on the network)")
    net.add_argument("--hops", choices=HOPS, default="algorithm",
                     help="α multipliers: the MPI algorithms' (default) or those "
                     "[network] delay_ms emulates (decomp.comm.delay.rounds)")
    cal = p.add_argument_group("calibration")
    cal.add_argument("--calibration", metavar="FILE",
                     help="codec cost cache (default ~/.cache/decomp/netmodel-calibration.json;"
                     " missing entries are measured here and added)")
    cal.add_argument("--compute-ms", type=float,
                     help="compute time per step, ms (default: timed on the config's problem)")
    st = p.add_argument_group("steps to target (default: the config's run.steps)")
    st.add_argument("--target", type=float, help="‖∇f(x̄)‖² to reach")
    st.add_argument("--sim-curve", metavar="PATH", help="decomp sim --out folder (or its "
                    "metrics.jsonl) to read the steps to --target from")
    st.add_argument("--sim", action="store_true", help="run decomp sim of the config at "
                    "--sim-workers now and read the steps to --target (to the resolution of "
                    "run.log_every: lower it with --set run.log_every=N)")
    st.add_argument("--sim-workers", type=int, help="n of the reference (default: the "
                    "curve's, else run.workers, else 8)")
    st.add_argument("--transient", choices=("measured", "bound"), default="measured",
                    help="gossip methods: scale only the measured excess over allreduce_sgd's "
                    "count (default), or give the upper bound over every split of the count "
                    "(bound: S_ref·max(1, q_ref/q))")
    st.add_argument("--steps-to-target", type=float, metavar="N",
                    help="the same measured count for every method (at --sim-workers)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--data-dir", help="directory with LIBSVM files (default: $DECOMP_DATA)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--brief", action="store_true", help="one table per topology: a row per "
                   "method, per rank count the step (ms) and the time to target")
    p.set_defaults(func=cmd_model)


def _reference(args: argparse.Namespace, cfg: Any, sets: list[str]) -> Any:
    from decomp.errors import ConfigError
    from decomp.netmodel.steps import StepsReference, read_curve

    given = [x for x in ("sim_curve", "sim", "steps_to_target") if getattr(args, x)]
    if len(given) > 1:
        raise ConfigError("give one of --sim-curve, --sim, --steps-to-target")
    n_ref = args.sim_workers or cfg.run.workers or 8
    if args.steps_to_target is not None:
        if args.steps_to_target <= 0:
            raise ConfigError("--steps-to-target must be positive")
        return StepsReference({m.label: args.steps_to_target for m in cfg.methods}, n_ref,
                              None, "--steps-to-target")
    if not given:
        if args.target is not None:
            raise ConfigError("--target needs --sim-curve PATH or --sim")
        return None
    if args.target is None or not args.target > 0:
        raise ConfigError("--sim-curve / --sim need --target EPS > 0 (‖∇f‖² to reach)")
    if args.sim_curve:
        return read_curve(args.sim_curve, args.target, args.sim_workers)
    from decomp.config import load_config
    from decomp.runner import simulate_config

    with tempfile.TemporaryDirectory() as tmp:
        c = load_config(args.config, [*sets, f"out_dir={quote(tmp)}"])
        print(f"# decomp sim of {args.config} at n = {n_ref} ...", file=sys.stderr, flush=True)
        simulate_config(c, n_ref, write=True)
        ref = read_curve(Path(tmp) / c.name, args.target, n_ref)
    return StepsReference(ref.steps, ref.n_ref, ref.target,
                          f"decomp sim at n = {n_ref}, logged every {c.run.log_every} steps")


def cmd_model(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except DecompError as e:
        print(f"decomp model: error: {e}", file=sys.stderr)
        return EXIT_ERROR


def _run(args: argparse.Namespace) -> int:
    from decomp.cli.run import overrides
    from decomp.config import load_config
    from decomp.errors import ConfigError
    from decomp.netmodel import calibrate as cal
    from decomp.netmodel.predict import predict_config
    from decomp.netmodel.spectral import TOPOLOGIES, canonical_topology, check_ranks

    args.steps = None
    sets = overrides(args)
    cfg = load_config(args.config, sets)
    if args.base_latency_us < 0:
        raise ConfigError("--base-latency-us must be >= 0")
    link = cal.link_params(args.rate, args.delay, link=args.link,
                           base_latency_s=args.base_latency_us * 1e-6)
    if args.topology:
        topos = [canonical_topology(t) for t in args.topology]
    else:
        kind = cfg.topology.kind.strip().lower().replace("_", "-")
        if cfg.topology.schedule or kind not in TOPOLOGIES:
            raise ConfigError(f"the config's topology {cfg.topology.schedule or kind!r} is not "
                              f"one the model covers: give --topology ({', '.join(TOPOLOGIES)})")
        topos = [canonical_topology(kind)]
    for t in topos:
        for n in args.ranks:
            check_ranks(t, n)
    if args.compute_ms is not None and not args.compute_ms >= 0:
        raise ConfigError("--compute-ms must be >= 0")
    reference = _reference(args, cfg, sets)
    d = cal.model_dim(cfg)
    costs = cal.CodecCosts.load(args.calibration)
    if args.compute_ms is not None:
        compute: Any = args.compute_ms / 1e3
    else:
        def compute(spec: Any, n: int) -> float:
            return cal.estimate_compute(cfg, n, spec.batch_size)
    rows = predict_config(cfg, args.ranks, topos, link, d=d, compute_s=compute, costs=costs,
                          reference=reference, allreduce=args.allreduce, hops=args.hops,
                          transient=args.transient, layout=cal.model_layout(cfg),
                          ranks_per_node=args.ranks_per_node)
    from decomp.comm.tree import resolve_aggregation

    agg = resolve_aggregation(cfg.run.master, cfg.run.aggregation)
    head = (f"# {cfg.name}: d = {d}, {link.source}; allreduce {args.allreduce}, hops "
            f"{args.hops}; aggregation {agg}"
            f"{f' ({args.ranks_per_node} ranks per node)' if args.ranks_per_node > 1 else ''}"
            "; compute "
            f"{'given' if args.compute_ms is not None else 'timed here'}; "
            f"codec costs {costs.path}")
    if reference is not None:
        head += (f"\n# steps to target: {reference.source}"
                 + (f", ‖∇f‖² <= {reference.target:g}" if reference.target else "")
                 + f", n_ref = {reference.n_ref} on {cfg.topology.kind}, transient "
                 f"{args.transient}")
    notes = []
    for n in args.ranks:
        rows_n = cal.shard_rows(cfg, n)
        big = sorted({m.batch_size for m in cfg.methods
                      if m.batch_size and rows_n is not None and m.batch_size > rows_n})
        if big:
            notes.append(f"# note: at n = {n} a shard has {rows_n} rows < batch_size "
                         f"{', '.join(map(str, big))}: decomp run refuses that; the gradient "
                         f"is timed on the {rows_n} rows")
    print("\n".join([head, *notes]))
    print(format_brief(rows) if args.brief else format_rows(rows))
    if args.json:
        doc = {"config": str(args.config), "d": d, "alpha_s": link.alpha_s,
               "beta_Bps": link.beta_Bps, "link": link.source, "allreduce": args.allreduce,
               "hops": args.hops, "transient": args.transient, "aggregation": agg,
               "calibration": str(costs.path),
               "reference": None if reference is None else {
                   "source": reference.source, "n_ref": reference.n_ref,
                   "target": reference.target, "steps": reference.steps},
               "rows": [r.as_dict() for r in rows]}
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0


def _t(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, f in (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0)):
        if s >= f:
            return f"{s / f:.3g} {unit}"
    return f"{s * 1e3:.3g} ms"


def format_rows(rows: list[Any]) -> str:
    """One fixed-width table per (topology, n)."""
    out: list[str] = []
    key = None
    for r in rows:
        st = r.step
        if (st.topology, st.n) != key:
            key = (st.topology, st.n)
            from decomp.netmodel.spectral import degree

            out += ["", f"## {st.topology}, n = {st.n}: degree {degree(st.topology, st.n)}, "
                    f"spectral gap {r.spectral_gap:.3g}",
                    f"{'method':<24} {'link B/step':>11} {'comm ms':>9} {'codec ms':>9} "
                    f"{'compute ms':>10} {'step ms':>9} {'steps':>10} {'to target':>10}  "
                    "steps from"]
        steps = "-" if r.steps is None else f"{r.steps:.4g}"
        out.append(f"{st.method[:24]:<24} {st.link_bytes:>11,.0f} {st.comm_s * 1e3:>9.3f} "
                   f"{st.compress_s * 1e3:>9.3f} {st.compute_s * 1e3:>10.3f} "
                   f"{st.step_s * 1e3:>9.3f} {steps:>10} {_t(r.time_s):>10}  {r.steps_source}")
    return "\n".join(out).lstrip("\n")


def format_brief(rows: list[Any]) -> str:
    """One table per topology: a row per method, per n "step ms / time to target"."""
    out: list[str] = []
    topos = list(dict.fromkeys(r.step.topology for r in rows))
    for topo in topos:
        sub = [r for r in rows if r.step.topology == topo]
        ns = list(dict.fromkeys(r.step.n for r in sub))
        methods = list(dict.fromkeys(r.step.method for r in sub))
        cell = {(r.step.method, r.step.n): r for r in sub}
        gaps = ", ".join(f"n={n}: {cell[methods[0], n].spectral_gap:.3g}" for n in ns)
        out += ["", f"## {topo} (spectral gap {gaps}); step ms / steps / time to target",
                f"{'method':<24} " + " ".join(f"{'n = ' + str(n):>30}" for n in ns)]
        for m in methods:
            cells = []
            for n in ns:
                r = cell[m, n]
                steps = "-" if r.steps is None else f"{r.steps:.3g}"
                cells.append(f"{r.step.step_s * 1e3:.3g} / {steps} / {_t(r.time_s)}")
            out.append(f"{m[:24]:<24} " + " ".join(f"{c:>30}" for c in cells))
    return "\n".join(out).lstrip("\n")
