"""The emulated cluster (jobs/local/emulate/): 2 hosts x 2 ranks over TCP, links shaped by tbf.

Run by ``make test-cluster`` (jobs/local/emulate/test.sh), which checks root, ``ip``, ``tc`` and
network namespaces and sets DECOMP_EMU_OK=1; skipped otherwise, so ``make test-e2e`` leaves it to
that target. Each test stands the cluster up, runs a short job across it and tears it down
(cluster.py's ``run``), and checks that it is gone afterwards.

What is checked: the link's measured rate and delay (``decomp bench link``) are the configured
ones; EF21 and CHOCO-SGD jobs across the hosts report the bytes their compressors' payloads
predict, and their step time reflects the shaped rate: at least the time the bytes that cross
the host link need at that rate (a bound load cannot break; no ratio to an unshaped run, whose
time is the machine's load as much as the job's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from decomp.compress import make_compressor

pytestmark = pytest.mark.skipif(os.environ.get("DECOMP_EMU_OK") != "1",
                                reason="the emulated cluster runs from `make test-cluster` "
                                       "(root, ip, tc; jobs/local/emulate/test.sh)")

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "jobs" / "local" / "emulate" / "cluster.py"
BIN = Path(sys.executable).parent
RATE, RATE_BPS = "1mbit", 1e6 / 8
D = 1_000  # features: 5 KB payloads, so the 1 Mbit/s link dominates a step
STEPS = 12


def _cluster(rate: str, *cmd: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", DECOMP_PROGRESS="0",
               DECOMP_EMU_PREFIX="dcetest")
    r = subprocess.run([sys.executable, str(CLUSTER), "run", "--hosts", "2",
                        "--ranks-per-host", "2", "--rate", rate, "--", *cmd],
                       capture_output=True, text=True, timeout=timeout, env=env, check=False)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "dcetest" not in left, f"namespaces left behind: {left}"
    return r


def _config(tmp_path: Path, name: str, method: str) -> Path:
    p = tmp_path / f"{name}.toml"
    # the crossing-bytes analysis below is the gather's; "ef21-tree" keeps the default (auto)
    aggregation = 'aggregation = "gather"' if name == "ef21" else ""
    p.write_text(f"""
name = "{name}"
out_dir = "{tmp_path / 'runs'}"
[problem]
kind = "logistic"
dataset = "synthetic"
n_samples = 200
n_features = {D}
[run]
steps = {STEPS}
log_every = {STEPS}
progress = false
{aggregation}
[topology]
kind = "ring"
{method}
""")
    return p


CHOCO = """[[methods]]
algorithm = "choco_sgd"
compressor = { kind = "topk", ratio = 0.5 }
lr = 0.1
consensus_step = 0.5
"""
EF21 = """[[methods]]
algorithm = "ef21"
compressor = { kind = "topk", ratio = 0.5 }
"""
#: EF21 as the default ``aggregation = "auto"`` runs it on two hosts: the node-aware tree
EF21_TREE = EF21


def _summary(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / "runs" / name / "summary.json").read_text())["methods"][0]


def test_the_link_has_the_configured_rate_and_delay(tmp_path: Path) -> None:
    out = tmp_path / "link.json"
    r = _cluster("20mbit", str(BIN / "decomp"), "bench", "link", "--delay-ms", "5",
                 "--expect-rate", "20mbit", "--repeat", "3", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    fit = json.loads(out.read_text())
    assert fit["beta_Bps"] == pytest.approx(20e6 / 8, rel=0.2)
    # at least the delay; the stack's latency and a late wake-up on a loaded machine on top
    assert 0.005 <= fit["alpha_s"] <= 0.005 * 1.2 + 0.005


@pytest.mark.parametrize(("name", "method"), [("choco", CHOCO), ("ef21", EF21),
                                              ("ef21-tree", EF21_TREE)])
def test_a_job_across_two_hosts_pays_the_shaped_rate(tmp_path: Path, name: str,
                                                      method: str) -> None:
    cfg = _config(tmp_path, name, method)
    r = _cluster(RATE, str(BIN / "decomp"), "run", str(cfg), "--overwrite")
    assert r.returncode == 0, r.stdout + r.stderr
    s = _summary(tmp_path, name)
    assert s["status"] == "ok" and s["steps"] == STEPS
    step_s = s["wall_s"] / STEPS
    # the bytes: what crossed MPI equals the reference's accounting of the same run
    # decomp sim runs in one process: it reads the node layout the run recorded, so "auto"
    # resolves to the same tree. The emulated hosts share no memory (MPICH's shared memory is
    # off there), so MPI_Comm_split_type makes every rank its own node: "1,1,1,1"
    assert s["aggregation"] == ("tree" if name == "ef21-tree" else
                                "gather" if name == "ef21" else None)
    run = json.loads((tmp_path / "runs" / name / "summary.json").read_text())["run"]
    assert (run["node_layout"], run["node_layout_from"]) == ("1,1,1,1", "MPI_Comm_split_type")
    ref = subprocess.run([str(BIN / "decomp"), "sim", str(cfg), "--workers", "4", "--out",
                          str(tmp_path / "sim"), "--node-layout", str(tmp_path / "runs" / name)],
                         capture_output=True, text=True, timeout=240,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), check=False)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    sim = json.loads((tmp_path / "sim" / name / "summary.json").read_text())["methods"][0]
    assert (s["bits_up"], s["bits_down"]) == (sim["bits_up"], sim["bits_down"])
    if name == "ef21-tree":
        # Its bytes are the reference's. No wall-clock comparison with the unshaped run: that
        # one's time is the machine's load as much as the job's (a 2x check failed at load 29);
        # the tree's speed is measured by jobs/local/emulate/tree_vs_gather.py instead.
        return
    payload = make_compressor({"kind": "topk", "ratio": 0.5}).payload_bytes(D, "float64")
    up = s["bits_up"] / 8 / STEPS  # bytes one node / worker sent per step
    if name == "choco":
        # ring 0-1-2-3-0 with ranks 0,1 on host 1 and 2,3 on host 2: each node sends one payload
        # to each of its 2 neighbours per step, and each host's link carries 2 of them per step
        assert up == 2 * payload
        crossing = up
    else:
        # shared master on rank 0 (host 1): workers 2 and 3 gather across the link (host 2's
        # egress carries 2 uplinks), then the model update goes down (binomial tree: 0 -> 2
        # crosses once)
        assert up >= payload
        crossing = 2 * up + s["bits_down"] / 8 / STEPS
    # The shaped link cannot carry the crossing bytes faster than its rate: a bound that load
    # cannot break (load only slows a step). No ratio to the unshaped step, whose time is the
    # machine's load as much as the job's (0.177 s shaped against 0.190 s unshaped at load 29).
    floor = crossing / RATE_BPS
    assert step_s >= 0.7 * floor, (step_s, floor)
