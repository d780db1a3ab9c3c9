#!/usr/bin/env python3
"""The master–worker family's sum over the emulated cluster: ``run.aggregation = "gather"``
against ``"tree"`` on H hosts x 1 rank (every rank behind its own shaped link), measured and
predicted by the cost model (docs/networks.md, "8 hosts: tree against gather").

    flock /tmp/decomp-emulate.lock python jobs/local/emulate/tree_vs_gather.py \\
        jobs/configs/networks_tree8.toml --hosts 8 --rate 100mbit --steps 8 --repeat 2

Per repeat, gather then tree (interleaved, so a change of the machine's load hits both): stand
up the hosts, ``decomp run CONFIG`` for ``--steps`` steps, tear down; a method's step time is
the mean wall time between its first logged step and its last (start-up and the first step
left out, as in sweep.py). The link's α (base latency) and β (rate) come from ``decomp bench
link`` on two hosts at the same rate (or ``--link`` a saved one). The model's prediction
(:func:`decomp.netmodel.predict_step_time`, hops as emulated) is given the run's own compute per
step (the master–worker family books none: all-reduce SGD's gradient time of the same run) and
its measured compression time where booked, else this machine's codec calibration; its job is
the communication. Prints measured, predicted and the error per method and aggregation, then
the communication alone: the time rank 0 booked as communication per step (``comm_s`` of its
summary: the calls and the waits in them) against the model's ``comm_s``, the tree / gather
ratio of each repeat (interleaved pairs) and the machine's 1-minute load average at the start
and end of each run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(HERE))

from sweep import step_times  # noqa: E402

BASELINE = "all-reduce SGD"
MODES = ("gather", "tree")


def read_run(out: Path, name: str, load: tuple[float, float] | None = None) -> dict[str, Any]:
    summary = json.loads((out / name / "summary.json").read_text())["methods"]
    return {"times": step_times(out / name, skip=1),
            "summary": {s["method"]: s for s in summary}, "load": load}


def run_once(config: str, hosts: int, rate: str, steps: int, mode: str, out: Path,
             rep: int, again: bool = True) -> dict[str, Any]:
    name = f"tree8-{mode}-{rep}"
    if not again:
        return read_run(out, name)
    cmd = [sys.executable, str(HERE / "cluster.py"), "run", "--hosts", str(hosts),
           "--ranks-per-host", "1", "--rate", rate, "--", str(BIN / "decomp"), "run", config,
           "--steps", str(steps), "--out", str(out), "--overwrite", "--no-progress",
           "--set", f'name="{name}"', "--set", f'run.aggregation="{mode}"',
           "--set", f"run.log_every={max(1, steps // 2)}"]
    print("+", " ".join(cmd), flush=True)
    before = os.getloadavg()[0]
    subprocess.run(cmd, check=True, timeout=3600)
    return read_run(out, name, (before, os.getloadavg()[0]))


def link(hosts_rate: str, path: Path | None) -> dict[str, float]:
    if path is not None and path.exists():
        return json.loads(path.read_text())
    dest = path or Path("/tmp/decomp-tree8-link.json")
    cmd = [sys.executable, str(HERE / "cluster.py"), "run", "--hosts", "2", "--ranks-per-host",
           "1", "--rate", hosts_rate, "--", str(BIN / "decomp"), "bench", "link",
           "--json", str(dest)]
    print("+", " ".join(cmd), flush=True)
    # exits 1 when the fit misses its checks (a loaded machine): the fit is written anyway
    subprocess.run(cmd, check=False, timeout=600)
    return json.loads(dest.read_text())


def predict(config: str, mode: str, runs: list[dict[str, Any]], alpha: float, beta: float,
            n: int, d: int, every: list[dict[str, Any]]) -> dict[str, float]:
    """Predicted seconds per step of every method with ``run.aggregation = mode``: compute
    per step is the median over ``every`` run (both aggregations: the gradient does not
    depend on how the sum travels, and one mode's load must not become the model's)."""
    from decomp.config import load_config
    from decomp.netmodel import predict_step_time
    from decomp.netmodel.calibrate import CodecCosts

    cfg = load_config(config, [f'run.aggregation="{mode}"'])
    per = runs[0]["summary"]
    dense = statistics.median(r["summary"][BASELINE]["compute_s"]
                              / r["summary"][BASELINE]["steps"] for r in every)
    comp = {m: (statistics.median(r["summary"][m]["compute_s"] / r["summary"][m]["steps"]
                                  for r in every)
                if per[m]["compute_s"] is not None else dense) for m in per}
    pred = predict_step_time(cfg, d, n, "ring", alpha, beta,
                             lambda spec, n_, c=comp: c[spec.label], hops="emulated",
                             costs=CodecCosts.load())
    assert isinstance(pred, dict)
    out = {}
    for m, st in pred.items():
        booked = [r["summary"][m]["compress_s"] for r in runs]
        if booked[0] is not None:
            measured = statistics.median(b / r["summary"][m]["steps"]
                                         for b, r in zip(booked, runs, strict=True))
            out[m] = (st.step_s - st.compress_s + measured, st.comm_s)
        else:
            out[m] = (st.step_s, st.comm_s)
    return out


def comm_per_step(run: dict[str, Any], method: str) -> float | None:
    """Seconds rank 0 booked as communication per step (None: not booked)."""
    s = run["summary"][method]
    return None if s.get("comm_s") is None else s["comm_s"] / max(1, s["steps"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--hosts", type=int, default=8)
    p.add_argument("--rate", default="100mbit")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--d", type=int, default=1_101_834)
    p.add_argument("--link", type=Path, help="decomp bench link --json of this rate (else run)")
    p.add_argument("--out", type=Path, default=Path("runs/tree8"))
    p.add_argument("--json", type=Path, help="write the measurements and predictions here")
    p.add_argument("--reuse", action="store_true",
                   help="read the runs already in --out instead of running them")
    args = p.parse_args(argv)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for rep in range(args.repeat):
        for mode in MODES:
            runs[mode].append(run_once(args.config, args.hosts, args.rate, args.steps, mode,
                                       args.out, rep, again=not args.reuse))
    lk = link(args.rate, args.link)
    rows = []
    for mode in MODES:
        pred = predict(args.config, mode, runs[mode], lk["alpha_s"], lk["beta_Bps"],
                       args.hosts, args.d, [r for rs in runs.values() for r in rs])
        for m in runs[mode][0]["times"]:
            meas = [r["times"][m]["step_s"] for r in runs[mode]]
            comm = [comm_per_step(r, m) for r in runs[mode]]
            comm_ok = [c for c in comm if c is not None]
            rows.append({"aggregation": mode, "method": m, "measured_ms": meas,
                         "median_ms": statistics.median(meas) * 1e3,
                         "predicted_ms": pred[m][0] * 1e3,
                         "error": pred[m][0] / statistics.median(meas) - 1,
                         "comm_ms": comm_ok,
                         "comm_median_ms": (statistics.median(comm_ok) * 1e3 if comm_ok
                                            else None),
                         "comm_predicted_ms": pred[m][1] * 1e3,
                         "load": [r["load"] for r in runs[mode]]})
    print(f"alpha0 = {lk['alpha_s'] * 1e3:.3f} ms, beta = {lk['beta_Bps'] / 1e6:.2f} MB/s, "
          f"{args.hosts} hosts x 1 rank at {args.rate}")
    print("| aggregation | method | measured ms/step (each run) | median | predicted | error |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        each = ", ".join(f"{t * 1e3:.0f}" for t in r["measured_ms"])
        print(f"| {r['aggregation']} | {r['method']} | {each} | {r['median_ms']:.1f} | "
              f"{r['predicted_ms']:.1f} | {r['error']:+.0%} |")
    print("\n| aggregation | method | communication ms/step, rank 0 (each run) | median | "
          "predicted | error | load average (start-end of each run) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["comm_median_ms"] is None:
            continue
        each = ", ".join(f"{t * 1e3:.0f}" for t in r["comm_ms"])
        load = ", ".join("-" if ld is None else f"{ld[0]:.0f}-{ld[1]:.0f}" for ld in r["load"])
        print(f"| {r['aggregation']} | {r['method']} | {each} | {r['comm_median_ms']:.1f} | "
              f"{r['comm_predicted_ms']:.1f} | "
              f"{r['comm_predicted_ms'] / r['comm_median_ms'] - 1:+.0%} | {load} |")
    ef = [r for r in rows if r["method"] != BASELINE]
    for m in {r["method"] for r in ef}:
        g = next(r for r in ef if r["method"] == m and r["aggregation"] == "gather")
        t = next(r for r in ef if r["method"] == m and r["aggregation"] == "tree")
        pairs = ", ".join(f"{a / b:.2f}" for a, b in zip(t["measured_ms"], g["measured_ms"],
                                                          strict=True))
        comm = ("" if not (t["comm_median_ms"] and g["comm_median_ms"]) else
                f"; communication {t['comm_median_ms'] / g['comm_median_ms']:.2f} measured, "
                f"{t['comm_predicted_ms'] / g['comm_predicted_ms']:.2f} predicted")
        print(f"{m}: tree / gather = {t['median_ms'] / g['median_ms']:.2f} measured (each "
              f"repeat: {pairs}), {t['predicted_ms'] / g['predicted_ms']:.2f} predicted{comm}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"link": lk, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
