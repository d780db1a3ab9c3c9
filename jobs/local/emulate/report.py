#!/usr/bin/env python3
"""Time to target on the emulated cluster: steps to target x measured step time, as tables and a
figure (docs/networks.md).

Inputs: the metrics of a full run of the config (``--curves RUN_DIR``: the iterates, hence the
steps to a target, do not depend on the network -- MPI runs equal ``decomp sim``), and the step
times of jobs/local/emulate/sweep.py (``--steps STEPS_JSON``). PyTorch DDP computes what
all-reduce SGD computes (the mean minibatch gradient, the same update), so it takes all-reduce
SGD's steps; its step time is measured on the same links (``decomp bench step``), and with a
delay it is modelled as that time plus the delay's hops of one ring/Rabenseifner all-reduce per
bucket (2 ceil(log2 n) x delay; gloo cannot be delayed from outside), which is said in the table.

    python jobs/local/emulate/report.py --curves runs/networks/curves/networks-mnist1d \\
        --steps runs/networks/steps.json --target 1.4 --markdown --figure docs/figures/net.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from decomp.netmodel.calibrate import parse_rate

DDP = "PyTorch DDP (gloo)"
BASELINE = "all-reduce SGD"


def steps_to_target(run_dir: Path, target: float, key: str = "loss") -> dict[str, int | None]:
    """{method: first logged step with ``key`` <= target (None: never)}."""
    first: dict[str, int | None] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        m = r["method"]
        first.setdefault(m, None)
        v = r.get(key)
        if first[m] is None and v is not None and r["step"] > 0 and v <= target:
            first[m] = r["step"]
    return first


def table(steps: dict[str, int | None], times: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """One row per (setting, method): steps, step time, time to target, ratios to the
    all-reduce SGD and DDP times of the same setting."""
    rows = []
    hops = 2 * math.ceil(math.log2(n))
    ddp0 = {v["rate"]: v["ddp_step_s_no_delay"] for v in times.values()
            if "ddp_step_s_no_delay" in v}
    for key, v in times.items():
        ms = dict(v["methods"])
        if v["rate"] in ddp0 and v["topology"] == "config":
            ms[DDP] = {"step_s": ddp0[v["rate"]] + hops * v["delay_ms"] / 1e3,
                       "bits_up_per_step": float("nan"), "modelled": v["delay_ms"] > 0}
        base = _ttt(steps.get(BASELINE), ms.get(BASELINE))
        ddp = _ttt(steps.get(BASELINE), ms.get(DDP))
        for m, t in ms.items():
            s = steps.get(BASELINE if m == DDP else m)
            ttt = _ttt(s, t)
            rows.append({"setting": key, "rate": v["rate"], "delay_ms": v["delay_ms"],
                         "topology": v["topology"], "method": m, "steps": s,
                         "step_ms": t["step_s"] * 1e3, "time_s": ttt,
                         "vs_allreduce": base / ttt if ttt and base else None,
                         "vs_ddp": ddp / ttt if ttt and ddp else None,
                         "ddp_delay_modelled": bool(t.get("modelled"))})
    return rows


def _ttt(s: int | None, t: dict[str, float] | None) -> float | None:
    return s * t["step_s"] if s is not None and t is not None else None


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def markdown(rows: list[dict[str, Any]]) -> str:
    out = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        rs = [r for r in rows if r["setting"] == setting]
        out += [f"\n**{rs[0]['rate']}, delay {rs[0]['delay_ms']:g} ms** ({rs[0]['topology']})\n",
                "| method | steps to target | ms / step | time to target (s) | speed-up vs "
                "all-reduce SGD | vs DDP |", "|---|---|---|---|---|---|"]
        for r in sorted(rs, key=lambda r: (r["time_s"] is None, r["time_s"] or 0)):
            star = " (delay modelled)" if r["ddp_delay_modelled"] else ""
            out.append(f"| {r['method']}{star} | {_fmt(r['steps'], 'd')} | "
                       f"{r['step_ms']:.1f} | {_fmt(r['time_s'], '.1f')} | "
                       f"{_fmt(r['vs_allreduce'], '.2f')}x | {_fmt(r['vs_ddp'], '.2f')}x |")
    return "\n".join(out)


def grid(rows: list[dict[str, Any]], topology: str = "config") -> str:
    """One table: a row per method, a column per (rate, delay): time to target in s and, in
    brackets, the speed-up over all-reduce SGD in the same setting."""
    rs = [r for r in rows if r["topology"] == topology]
    settings = list(dict.fromkeys((r["rate"], r["delay_ms"]) for r in rs))
    head = "| method | " + " | ".join(f"{a}, {d:g} ms" for a, d in settings) + " |"
    out = [head, "|---" * (len(settings) + 1) + "|"]
    for m in dict.fromkeys(r["method"] for r in rs):
        cells = []
        for a, d in settings:
            r = next((r for r in rs if r["method"] == m and r["rate"] == a
                      and r["delay_ms"] == d), None)
            if r is None or r["time_s"] is None:
                cells.append("–")
            else:
                cells.append(f"{r['time_s']:.1f} ({_fmt(r['vs_allreduce'], '.2f')}×)")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    delays = sorted({r["delay_ms"] for r in rows})
    fig, axes = plt.subplots(1, len(delays), figsize=(5 * len(delays), 4), sharey=True,
                             squeeze=False)
    for ax, d in zip(axes[0], delays, strict=True):
        rs = [r for r in rows if r["delay_ms"] == d and r["topology"] == "config"
              and r["time_s"] is not None]
        for m in dict.fromkeys(r["method"] for r in rs):
            pts = sorted((parse_rate(r["rate"]) * 8, r["time_s"]) for r in rs if r["method"] == m)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    ls="--" if m == DDP else "-", label=m)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("link rate per host (bit/s)")
        ax.set_title(f"delay {d:g} ms per hop")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("time to target (s)")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--curves", required=True, type=Path)
    p.add_argument("--steps", required=True, type=Path)
    p.add_argument("--target", required=True, type=float, help="training loss to reach")
    p.add_argument("--ranks", type=int, default=4)
    p.add_argument("--markdown", action="store_true", help="a table per setting")
    p.add_argument("--grid", action="store_true", help="one table: methods x settings")
    p.add_argument("--figure", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    steps = steps_to_target(args.curves, args.target)
    rows = table(steps, json.loads(args.steps.read_text()), args.ranks)
    print(f"steps to training loss <= {args.target:g}: {json.dumps(steps)}")
    if args.markdown:
        print(markdown(rows))
    if args.grid:
        print(grid(rows, rows[0]["topology"] if rows else "config"))
    if args.figure:
        figure(rows, args.figure)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
