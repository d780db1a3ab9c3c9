#!/usr/bin/env python3
"""The cost model (decomp.netmodel) against step times measured on the emulated cluster.

For every method and setting of a sweep (jobs/local/emulate/sweep.py on H hosts x 1 rank, so
every rank sits behind its own shaped link, as the model assumes), the model predicts the step
from α, β and the run's own compute and compression time per step (this machine's, measured in
the same run: the model's job is the communication); α = the link's base latency (``decomp bench
link`` at delay 0) + the emulated delay, β = the measured rate; hops as emulated
(``--hops emulated``). Prints measured vs predicted and the relative error.

    python jobs/local/emulate/model_check.py jobs/configs/networks_model_check.toml \\
        --steps runs/check.json --runs runs/check --link link.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from decomp.config import load_config
from decomp.netmodel import predict_step_time
from decomp.netmodel.calibrate import CodecCosts

BASELINE = "all-reduce SGD"


def check(config: Path, steps: dict[str, Any], runs: Path, alpha0: float, beta: float,
          n: int, d: int) -> list[dict[str, Any]]:
    cfg = load_config(config)
    costs = CodecCosts.load()
    rows = []
    for v in steps.values():
        name = f"net-{v['rate']}-{v['delay_ms']:g}ms-{v['topology']}"
        summary = json.loads((runs / name / "summary.json").read_text())["methods"]
        per = {s["method"]: s for s in summary}
        # the master-worker family's runs book no compute/compress split: its gradient is the
        # same minibatch gradient of the same model as all-reduce SGD's (that compute per step),
        # its codec time this machine's calibration (CodecCosts)
        dense = per[BASELINE]["compute_s"] / per[BASELINE]["steps"]
        comp = {m: (per[m]["compute_s"] / per[m]["steps"] if per[m]["compute_s"] is not None
                    else dense) for m in per}
        alpha = alpha0 + v["delay_ms"] / 1e3
        pred = predict_step_time(cfg, d, n, cfg.topology.kind, alpha, beta,
                                 lambda spec, n_, c=comp: c[spec.label], hops="emulated",
                                 costs=costs)
        assert isinstance(pred, dict)
        for m, t in v["methods"].items():
            if per[m]["compress_s"] is not None:
                p = pred[m].step_s - pred[m].compress_s + per[m]["compress_s"] / per[m]["steps"]
            else:
                p = pred[m].step_s
            rows.append({"rate": v["rate"], "delay_ms": v["delay_ms"], "method": m,
                         "measured_ms": t["step_s"] * 1e3, "predicted_ms": p * 1e3,
                         "comm_ms": pred[m].comm_s * 1e3, "error": p / t["step_s"] - 1})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", type=Path)
    p.add_argument("--steps", type=Path, required=True)
    p.add_argument("--runs", type=Path, required=True)
    p.add_argument("--link", type=Path, required=True, help="decomp bench link --json (delay 0)")
    p.add_argument("--ranks", type=int, default=4)
    p.add_argument("--d", type=int, default=1_101_834)
    args = p.parse_args(argv)
    link = json.loads(args.link.read_text())
    rows = check(args.config, json.loads(args.steps.read_text()), args.runs, link["alpha_s"],
                 link["beta_Bps"], args.ranks, args.d)
    print(f"alpha0 = {link['alpha_s'] * 1e3:.3f} ms, beta = {link['beta_Bps'] / 1e6:.2f} MB/s")
    print("| rate | delay | method | measured ms/step | predicted | of which comm | error |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rate']} | {r['delay_ms']:g} ms | {r['method']} | {r['measured_ms']:.1f} | "
              f"{r['predicted_ms']:.1f} | {r['comm_ms']:.1f} | {r['error']:+.0%} |")
    errs = [abs(r["error"]) for r in rows]
    print(f"\nmean |error| {sum(errs) / len(errs):.0%}, max {max(errs):.0%}, "
          f"{sum(e <= 0.25 for e in errs)}/{len(errs)} within 25 %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
