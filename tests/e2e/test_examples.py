"""E2E: the user examples in examples/ run as a user runs them, and a user's own script that
fails on one rank ends the whole job.

Each example runs with ``mpiexec -n 4 python examples/NAME.py --steps N`` at a small N (the
figures at a few hundred steps are in docs/torch.md, "Examples"); the test checks the exit
code, the ``final: ...`` line, a metric above chance and the bytes each rank sent, which are
exact (payload sizes are fixed by the compressor and d).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import mnist1d  # noqa: F401 (pinned: a missing one is a broken install)
import numpy as np
import pytest
import torch  # noqa: F401

from decomp.compress import QSGD, TopK
from tests.e2e.conftest import REPO, _tool
from tests.e2e.test_faults_input import processes_mentioning

EXAMPLES = REPO / "examples"
STEPS = 40


def _run(script: str, *args: str, np: int = 4, timeout: float = 280,
         cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    return subprocess.run([_tool("mpiexec"), "-n", str(np), _tool("python"), script, *args],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          check=False, cwd=cwd)


def _payload(C: object, d: int) -> int:
    return int(C.payload_bytes(d, np.float32))  # type: ignore[attr-defined]


def _final(out: str) -> dict[str, float]:
    lines = [s for s in out.splitlines() if s.startswith("final: ")]
    assert len(lines) == 1, out[-2000:]  # rank 0 alone prints it
    return {k: float(v) for k, v in re.findall(r"([a-z_()]+) ([0-9.]+)", lines[0])}


def test_digits_mlp_with_adam_and_ef21_topk() -> None:
    r = _run(str(EXAMPLES / "digits_mlp_ef21_adam.py"), "--steps", str(STEPS))
    assert r.returncode == 0, r.stderr[-3000:]
    m = _final(r.stdout)
    assert m["test_acc"] > 0.5  # 10 classes: chance 0.1
    # d = 26,122; Top-1 %: k = 261 float32 values + uint16 indices + 16-byte header = 1582 B,
    # one payload per step (the first is EF21's init)
    assert _payload(TopK(ratio=0.01), 26122) == 1582
    assert m["sent"] == pytest.approx(STEPS * 1582 / 1e6, abs=1e-9)


def test_digits_mlp_with_ddp_and_adam_for_comparison() -> None:
    r = _run(str(EXAMPLES / "digits_mlp_ef21_adam.py"), "--steps", str(STEPS), "--ddp")
    assert r.returncode == 0, r.stderr[-3000:]
    m = _final(r.stdout)
    assert m["test_acc"] > 0.5
    assert m["sent"] == pytest.approx(STEPS * 26122 * 4 / 1e6, abs=1e-9)  # dense gradients


def test_mnist1d_cnn_with_choco_on_a_ring_and_a_schedule() -> None:
    r = _run(str(EXAMPLES / "mnist1d_cnn_choco.py"), "--steps", str(STEPS))
    assert r.returncode == 0, r.stderr[-3000:]
    m = _final(r.stdout)
    assert m["test_acc(xbar)"] > 0.15 and m["min"] > 0.12  # chance 0.1 after 40 steps
    # d = 5,210; Top-5 %: k = 260 -> 16 + 260 * 6 = 1576 B to each of 2 ring neighbours
    assert _payload(TopK(ratio=0.05), 5210) == 1576
    assert m["sent"] == pytest.approx(STEPS * 2 * 1576 / 1e6, abs=1e-9)
    lrs = [float(v) for v in re.findall(r", lr ([0-9.]+)", r.stdout)]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.2  # the cosine schedule


def test_least_squares_with_dcd_psgd() -> None:
    r = _run(str(EXAMPLES / "least_squares_dcd.py"), "--steps", str(STEPS))
    assert r.returncode == 0, r.stderr[-3000:]
    m = _final(r.stdout)
    assert m["rel_error(xbar)"] < 0.5 and m["test_mse(xbar)"] < 20.0
    # d = 51; 8-bit QSGD: 16-byte header + float32 norm + 51 bytes = 71 B per neighbour
    assert _payload(QSGD(levels=127), 51) == 71
    assert m["sent"] == pytest.approx(STEPS * 2 * 71 / 1e6, abs=1e-9)


FAILING = """
import sys, torch
from torch import nn
from mpi4py import MPI
from decomp.algorithms import {alg}
from decomp.compress import TopK
from decomp.torch import DistributedOptimizer

rank = MPI.COMM_WORLD.rank
model = nn.Linear(8, 2)
opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, {make}{kw})
for step in range(10**6):
    x, y = torch.randn(4, 8), torch.randint(0, 2, (4,))
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    if rank == 2 and step == 5:
        raise RuntimeError("user bug on rank 2 {tag}")
    opt.step()
"""


FAILING_AT_IMPORT = """
from mpi4py import MPI
import decomp.torch  # under mpiexec: installs the abort-on-error hook
if MPI.COMM_WORLD.rank == 2:
    raise RuntimeError("user bug on rank 2 {tag}")  # e.g. a missing data file
MPI.COMM_WORLD.Barrier()  # the other ranks wait for rank 2
"""


@pytest.mark.parametrize("family", ["master_worker", "decentralized", "at_import"])
def test_a_user_script_failing_on_one_rank_ends_the_job(tmp_path: Path, family: str) -> None:
    """rank 2 of 4 raises in the loop (either family) or before any decomp object exists
    (after ``import decomp.torch``) while the others wait in a collective."""
    tag = f"decomp-e2e-fail-{family}-{os.getpid()}"
    alg, make, kw = (("EF21", "EF21(TopK(ratio=0.5))", "") if family == "master_worker" else
                     ("CHOCOSGD", "CHOCOSGD(TopK(ratio=0.5), consensus_step=0.5)",
                      ", topology='ring'"))
    script = tmp_path / f"{tag}.py"
    text = FAILING_AT_IMPORT if family == "at_import" else FAILING
    script.write_text(text.format(alg=alg, make=make, kw=kw, tag=tag))
    t0 = time.monotonic()
    r = _run(str(script), timeout=120, cwd=tmp_path)
    took = time.monotonic() - t0
    assert r.returncode != 0
    assert f"user bug on rank 2 {tag}" in r.stderr and "[rank 2]" in r.stderr, r.stderr[-2000:]
    assert took < 90
    deadline = time.monotonic() + 15  # the launcher's SIGKILLs may take a moment under load
    while processes_mentioning(tag) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not processes_mentioning(tag), processes_mentioning(tag)
