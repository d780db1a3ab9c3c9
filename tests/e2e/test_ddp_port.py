"""E2E: examples/ddp_port — a real DDP script (train_ddp.py, torch.distributed gloo under
torchrun) and its decomp port (train_decomp.py, under mpiexec) both train at 2 ranks; the port
with GD() prints DDP's losses; the port resumes from opt.save's checkpoint exactly; the
edit count docs/torch.md states is the one count_edits.py computes from the two files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, _tool

PORT = REPO / "examples" / "ddp_port"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "OMPI_", "SLURM_", "PMIX_"))}
    return dict(env, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", PYTHONPATH=str(REPO))


def _epochs(out: str) -> dict[int, tuple[float, float]]:
    """{epoch: (loss, test acc)} from rank 0's lines."""
    return {int(e): (float(loss), float(acc)) for e, loss, acc in
            re.findall(r"^epoch (\d+): loss ([0-9.]+), test acc ([0-9.]+)$", out, re.M)}


def _mpi(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("mpiexec"), "-n", "2", _tool("python"),
                           str(PORT / "train_decomp.py"), "--ckpt", str(tmp), *args],
                          capture_output=True, text=True, timeout=600, env=_env(),
                          check=False, cwd=tmp)


def test_the_edit_count_in_the_docs_is_the_diffs() -> None:
    sys.path.insert(0, str(PORT))
    try:
        from count_edits import count
    finally:
        sys.path.remove(str(PORT))
    c = count()
    doc = (REPO / "docs" / "torch.md").read_text()
    stated = (f"{c['places']} places: {c['removed']} lines removed, {c['added']} added "
              f"({c['ddp_lines']} code lines")
    assert stated in doc, f"docs/torch.md should say: {stated}"
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f"({c['places']} places changed)" in readme


@pytest.mark.timeout(1800)
def test_the_ddp_script_under_torchrun_and_the_port_with_gd_agree(tmp_path: Path) -> None:
    """DDP trains under torchrun (gloo); the port with GD() (DDP's dense all-reduce) in place
    of EF21 prints the same training losses: the port changes the communication, nothing
    else. (Test accuracies may differ a little: DDP evaluates rank 0's BatchNorm running
    statistics, the port under averaged() the ranks' mean.)"""
    r = subprocess.run([_tool("torchrun"), "--standalone", "--nproc-per-node", "2",
                        str(PORT / "train_ddp.py"), "--epochs", "2", "--ckpt", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env=_env(), check=False,
                       cwd=tmp_path)
    if r.returncode != 0 and "rendezvous" in r.stderr.lower():
        pytest.skip(f"torchrun cannot rendezvous here: {r.stderr[-500:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    ep = _epochs(r.stdout)
    assert sorted(ep) == [0, 1] and ep[1][1] > 0.2  # 10 classes: chance 0.1
    assert (tmp_path / "ckpt.pt").is_file()  # rank 0's single checkpoint
    port = (PORT / "train_decomp.py").read_text()
    gd = (port.replace("EF21(TopK(ratio=0.1))", "GD()")
          .replace("from decomp.algorithms import EF21", "from decomp.algorithms import GD")
          .replace("from decomp.compress import TopK\n", ""))
    assert gd.count("GD()") == 1 and "TopK" not in gd
    (tmp_path / "gd").mkdir()
    (tmp_path / "gd" / "train_gd.py").write_text(gd)
    g = subprocess.run([_tool("mpiexec"), "-n", "2", _tool("python"), "train_gd.py",
                        "--epochs", "2", "--ckpt", str(tmp_path / "gd")], capture_output=True,
                       text=True, timeout=600, env=_env(), check=False, cwd=tmp_path / "gd")
    assert g.returncode == 0, g.stderr[-3000:]
    assert {e: v[0] for e, v in _epochs(g.stdout).items()} == {e: v[0] for e, v in ep.items()}


@pytest.mark.timeout(1800)
def test_the_decomp_port_trains_and_resumes_exactly(tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    straight.mkdir()
    split.mkdir()
    a = _mpi(straight, "--epochs", "2")
    assert a.returncode == 0, a.stderr[-3000:]
    b1 = _mpi(split, "--epochs", "2", "--stop-after", "1")
    assert b1.returncode == 0, b1.stderr[-3000:]
    assert (split / "checkpoint.json").is_file()  # opt.save: every rank's state, one folder
    assert sorted(p.name for p in split.glob("s*/*.pt")) == ["rank0.pt", "rank1.pt"]
    b2 = _mpi(split, "--epochs", "2", "--resume")
    assert b2.returncode == 0, b2.stderr[-3000:]
    full, first, rest = _epochs(a.stdout), _epochs(b1.stdout), _epochs(b2.stdout)
    assert sorted(full) == [0, 1] and sorted(first) == [0] and sorted(rest) == [1]
    assert {**first, **rest} == full  # stopped after an epoch and resumed: the same run
    assert full[1][1] > 0.2 and full[1][0] < full[0][0]  # 10 classes: chance 0.1
