"""The engine knows no torch: no ``torch`` / ``decomp.torch`` import (module level or inside a
function) and no torch branch (``is_torch``, ``work.torch``) anywhere in ``decomp/runner``; the
numpy and torch workloads meet it through one protocol, and a numpy run never loads torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[2] / "decomp" / "runner"


def _torch_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            if name == "torch" or name.startswith(("torch.", "decomp.torch")):
                found.append(f"{path.name}:{node.lineno}: import {name}")
        if isinstance(node, ast.Name) and node.id == "is_torch":
            found.append(f"{path.name}:{node.lineno}: is_torch")
        if isinstance(node, ast.Attribute) and node.attr in ("torch", "is_torch"):
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
        if isinstance(node, ast.alias) and node.name == "is_torch":
            found.append(f"{path.name}:{node.lineno}: import is_torch")
    return found


@pytest.mark.parametrize("path", sorted(RUNNER.glob("*.py")), ids=lambda p: p.name)
def test_no_torch_import_or_branch_in_the_runner(path: Path) -> None:
    assert _torch_uses(path) == []


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(work, cfg):\n    import torch\n    from decomp.torch.x import y\n"
                   "    from decomp.config import is_torch\n"
                   "    return work.torch if is_torch(cfg) else None\n")
    assert len(_torch_uses(bad)) == 5


def test_every_problem_kind_has_a_workload_loader() -> None:
    from decomp.config import PROBLEM_KINDS
    from decomp.runner.workload import LOADERS

    assert set(LOADERS) == set(PROBLEM_KINDS)


def test_a_numpy_run_never_imports_torch(tmp_path: Path) -> None:
    code = ("import sys\nfrom decomp.config import load_config\n"
            "from decomp.runner import simulate_config\n"
            "cfg = load_config({'methods': [{'algorithm': 'ef21', 'compressor': "
            "{'kind': 'topk', 'k': 2}}], 'run': {'steps': 3}})\n"
            "assert simulate_config(cfg, 2)[0].status == 'ok'\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_the_workloads_implement_the_protocol() -> None:
    from decomp.config import load_config
    from decomp.runner.workload import Workload, loader_for

    cfg = load_config({"methods": [{"algorithm": "gd"}]})
    work = loader_for(cfg).load(cfg, 2, None)
    assert isinstance(work, Workload)
    assert work.buffers() == [] and work.test_evaluator(None) is None
    assert work.reference_test(work.x0, final=True) == {}
    from decomp.torch.workload import TorchWorkload

    for name in ("description", "table", "reset", "kept", "buffers", "test_evaluator",
                 "reference_test"):
        assert callable(getattr(TorchWorkload, name))
