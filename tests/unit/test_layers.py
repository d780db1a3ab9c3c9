"""Data flows one way: kernels → compressors → transport → algorithms → references / cost model
→ engine → front ends (docs/design.md). A lower layer never imports a higher one — counting
imports inside functions, so a cycle hidden by a local import still fails here.

The rule is written as, for each layer, the layers it must not import. ``decomp.algorithms``
names its reference in ``decomp.sim`` as a string (resolved by ``decomp.sim.reference``), so
the algorithms never import the references that test them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: source folder -> dotted package it installs as
PACKAGES = {"decomp": "decomp", "kernels": "decomp.kernels", "topologies": "decomp.topologies"}
FRONT = {"cli", "torch", "bench"}
ENGINE = {"runner", "config", "report", "slurm"} | FRONT
#: layer (decomp.<layer>) -> layers it must not import
FORBIDDEN: dict[str, set[str]] = {
    "kernels": {"compress", "comm", "algorithms", "sim", "netmodel", "problems", "data",
                "topologies"} | ENGINE,
    "topologies": {"compress", "comm", "algorithms", "sim", "netmodel"} | ENGINE,
    "compress": {"comm", "algorithms", "sim", "netmodel"} | ENGINE,
    "comm": {"algorithms", "sim", "netmodel"} | ENGINE,
    "algorithms": {"sim", "netmodel"} | ENGINE,
    "sim": {"netmodel"} | ENGINE,
    "runner": FRONT,
}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "decomp" and len(parts) > 1 else None


def _imports() -> dict[str, list[tuple[str, str]]]:
    """layer -> [(file, imported module)] for every import of a decomp module, anywhere in
    the file."""
    out: dict[str, list[tuple[str, str]]] = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            module = ".".join([package, *[p for p in rel.parts if p != "__init__"]])
            layer = _layer(module) or "decomp"
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                else:
                    continue
                out.setdefault(layer, []).extend(
                    (str(path.relative_to(ROOT)), n) for n in names if _layer(n))
    return out


IMPORTS = _imports()


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_does_not_import_the_layers_above_it(layer: str) -> None:
    bad = [f"{f} imports {m}" for f, m in IMPORTS.get(layer, [])
           if _layer(m) in FORBIDDEN[layer]]
    assert not bad, f"decomp.{layer} reaches up:\n" + "\n".join(bad)


def test_the_scan_sees_the_layers() -> None:
    """The scan is not vacuous: the known downward imports are found."""
    seen = {(layer, _layer(m)) for layer, pairs in IMPORTS.items() for _, m in pairs}
    for edge in [("compress", "kernels"), ("algorithms", "comm"), ("algorithms", "compress"),
                 ("sim", "algorithms"), ("runner", "algorithms"), ("torch", "runner"),
                 ("cli", "runner")]:
        assert edge in seen, edge
