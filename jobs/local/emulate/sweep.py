#!/usr/bin/env python3
"""Step times of every method of a config on the emulated cluster, over link rates and delays.

For each rate and delay: stand up H hosts x R ranks (cluster.py), run ``decomp run CONFIG`` for
``--steps`` steps with ``[network] delay_ms`` set, tear down; the mean step time of each method
is read from its metrics (wall time between the first logged step and the last, so start-up and
the first step's compilation are left out). Optionally the same for PyTorch DDP (gloo) with
``decomp bench step --model MODEL --methods ddp`` on the same links. Results go to one JSON file
(``--json``), merged with what is already there, so an interrupted sweep continues.

    python jobs/local/emulate/sweep.py jobs/configs/networks_mnist1d.toml \\
        --rates 100mbit,1gbit,10gbit --delays 0,1,10 --steps 8 --ddp-model mlp-mnist1d \\
        --json runs/networks/steps.json

Time to target = steps to target (from a full run of the same config: the iterates do not depend
on the network) x these step times: ``jobs/local/emulate/report.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def step_times(run_dir: Path, skip: int) -> dict[str, dict[str, float]]:
    """{method: {step_s, bytes_per_step}} from a run's metrics.jsonl: mean wall time per step
    between logged step ``skip`` and the last one."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.setdefault(r["method"], []).append(r)
    out = {}
    for m, rs in rows.items():
        a = next((r for r in rs if r["step"] >= skip), None)
        b = rs[-1]
        if a is None or b["step"] <= a["step"]:
            continue
        out[m] = {"step_s": (b["wall_s"] - a["wall_s"]) / (b["step"] - a["step"]),
                  "steps_timed": b["step"] - a["step"],
                  "bits_up_per_step": (b["bits_up"] - a["bits_up"]) / (b["step"] - a["step"])}
    return out


def ddp_step(rate: str, hosts: int, rph: int, model: str) -> float:
    """DDP (gloo) median step seconds on the emulated links (decomp bench step)."""
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"ddp-{os.getpid()}.json"
    cmd = [sys.executable, str(HERE / "cluster.py"), "run", "--hosts", str(hosts),
           "--ranks-per-host", str(rph), "--rate", rate, "--", str(BIN / "decomp"), "bench",
           "step", "--model", model, "--methods", "ddp", "--steps", "3", "--rounds", "3",
           "--warmup", "2", "--json", str(out)]
    subprocess.run(cmd, check=True, timeout=1800)
    rows = json.loads(out.read_text())["rows"]
    return next(r["median_ms"] for r in rows if r["method"] == "ddp") / 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--rates", default="100mbit,1gbit,10gbit")
    p.add_argument("--delays", default="0,1,10", help="ms, comma-separated")
    p.add_argument("--hosts", type=int, default=2)
    p.add_argument("--ranks-per-host", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--topology", default=None, help="override [topology] kind")
    p.add_argument("--ddp-model", default=None, help="also time DDP on this bench model")
    p.add_argument("--json", required=True)
    p.add_argument("--out", default="runs/networks")
    args = p.parse_args(argv)
    dest = Path(args.json)
    results: dict[str, Any] = json.loads(dest.read_text()) if dest.exists() else {}
    topo = args.topology or "config"
    for rate in args.rates.split(","):
        for delay in (float(d) for d in args.delays.split(",")):
            key = f"{rate}/{delay:g}ms/{topo}"
            if key in results:
                continue
            name = f"net-{rate}-{delay:g}ms-{topo}"
            cmd = [sys.executable, str(HERE / "cluster.py"), "run", "--hosts", str(args.hosts),
                   "--ranks-per-host", str(args.ranks_per_host), "--rate", rate, "--",
                   str(BIN / "decomp"), "run", args.config, "--steps", str(args.steps),
                   "--out", args.out, "--overwrite", "--set", f"name={name!r}".replace("'", '"'),
                   "--set", f"network.delay_ms={delay}",
                   "--set", f"run.log_every={args.steps // 2}",
                   "--set", "run.progress=false"]
            if args.topology:
                cmd += ["--set", f'topology.kind="{args.topology}"']
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, timeout=3600)
            results[key] = {"rate": rate, "delay_ms": delay, "topology": topo,
                            "methods": step_times(Path(args.out) / name, skip=1)}
            if args.ddp_model and topo == "config" and delay == 0:
                results[key]["ddp_step_s_no_delay"] = ddp_step(rate, args.hosts,
                                                                args.ranks_per_host,
                                                                args.ddp_model)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
