"""Start-up of ``decomp run`` for one step, against the world size (issue 23, docs/benchmarks.md
"Start-up").

    python jobs/local/startup/bench.py --ranks 1 4 8 16 32 --repeat 3 \\
        --tree after=.venv/bin/python --tree before=/tmp/before/.venv/bin/python

Each ``--tree LABEL=PYTHON`` is an interpreter whose ``decomp`` is one version of the code; the
runs of every tree are interleaved (tree A, tree B, tree A, ...) for each world size so that a
change of the machine's load hits both alike. One run is

    mpiexec -n N PYTHON -m decomp run CONFIG --steps 1 --out OUT --overwrite --no-progress

timed from the launch to mpiexec's exit (wall) and by the CPU seconds of every process it
started (user + sys of mpiexec's waited-for descendants, ``RUSAGE_CHILDREN``). The 1-minute
load average is read before each run. The table gives the median wall time, the median CPU
seconds per rank and the load range; ``--json`` writes every run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def one_run(python: str, mpiexec: str, n: int, config: str, out: str) -> dict:
    """Launch one ``decomp run`` of one step on ``n`` ranks; its wall and CPU seconds."""
    cmd = [mpiexec, "-n", str(n), python, "-m", "decomp", "run", config, "--steps", "1",
           "--out", out, "--overwrite", "--no-progress"]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # cwd: not a source tree (``-m`` puts the working directory first on sys.path)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=out)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n"
                         f"{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"n": n, "wall_s": wall, "cpu_s": cpu, "load": load, "cmd": " ".join(cmd)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", required=True, metavar="LABEL=PYTHON",
                   help="a version of the code: its label and its interpreter (repeatable)")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--config", default=str(ROOT / "jobs" / "configs" / "demo.toml"))
    p.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    p.add_argument("--out", default="/tmp/decomp-startup-bench")
    p.add_argument("--json", help="write every run to this file")
    args = p.parse_args(argv)
    trees = [t.split("=", 1) for t in args.tree]
    runs: list[dict] = []
    for n in args.ranks:
        for _ in range(args.repeat):
            for label, python in trees:
                out = Path(args.out, label)
                out.mkdir(parents=True, exist_ok=True)
                r = one_run(python, args.mpiexec, n, args.config, str(out))
                r["tree"] = label
                runs.append(r)
                print(f"{label:>8} n={n:<3} wall {r['wall_s']:6.2f} s  cpu {r['cpu_s']:6.2f} s"
                      f"  load {r['load']:.1f}", file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    print("| ranks | " + " | ".join(f"{label} wall s | {label} CPU s/rank"
                                      for label, _ in trees) + " | load (1 min) |")
    print("|---|" + "---|---|" * len(trees) + "---|")
    for n in args.ranks:
        cells = []
        for label, _ in trees:
            mine = [r for r in runs if r["n"] == n and r["tree"] == label]
            cells.append(f"{statistics.median(r['wall_s'] for r in mine):.2f} | "
                         f"{statistics.median(r['cpu_s'] for r in mine) / n:.2f}")
        loads = [r["load"] for r in runs if r["n"] == n]
        print(f"| {n} | " + " | ".join(cells) + f" | {min(loads):.1f}–{max(loads):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
