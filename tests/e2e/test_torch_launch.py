"""A user's script under torchrun's environment (WORLD_SIZE=2, LOCAL_RANK=0) with plain python
and no mpiexec — what `torchrun --nproc-per-node 2 train.py` starts in each process — is
refused by DistributedOptimizer with the command that works, before any training or output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import torch
import decomp.torch

model = torch.nn.Linear(4, 2)
opt = decomp.torch.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model)
open({out!r}, "w").write("trained alone")
"""


def _env(**extra: str) -> dict[str, str]:
    launchers = ("SLURM_", "PMI_", "PMIX_", "OMPI_", "WORLD_SIZE", "LOCAL_RANK", "RANK",
                 "DECOMP_ALLOW_SINGLETON")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launchers)}
    return {**env, "OMP_NUM_THREADS": "1", "DECOMP_PROGRESS": "0", **extra}


def test_torchrun_like_launch_of_a_script_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "ckpt.txt"
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(out=str(out)))
    torchrun = {"WORLD_SIZE": "2", "LOCAL_RANK": "0", "RANK": "0", "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    r = subprocess.run([sys.executable, str(script)], env=_env(**torchrun), cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "LaunchError: WORLD_SIZE=2: torchrun started 2 processes, but MPI sees a world of " \
           "1 rank" in r.stderr
    assert f"`mpiexec -n 2 python {script}`" in r.stderr
    assert not out.exists()  # refused before the script went on alone
    ok = subprocess.run([sys.executable, str(script)],
                        env=_env(**torchrun, DECOMP_ALLOW_SINGLETON="1"), cwd=tmp_path,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert out.read_text() == "trained alone"
