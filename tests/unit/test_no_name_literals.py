"""A method is one unit: no algorithm name is written outside decomp/algorithms/.

Every module of decomp/, kernels/ and topologies/ outside decomp/algorithms/ is parsed, and
every string constant in its *code* that equals a registered algorithm name
(:data:`decomp.algorithms.registry.REGISTRY`) is a finding: what the rest of the code needs to
know about a method it reads from the class or its registry line, not from a name it spells.

Docstrings are prose and are not code: a module, class or function docstring may mention a
method by name (they are left out here). Everything else counts — comparisons
(``name == "ef21"``), tables keyed by name, defaults, tuples of names, f-string pieces that are
a whole name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from decomp.algorithms.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("decomp", "kernels", "topologies")
EXEMPT = ROOT / "decomp" / "algorithms"


def _modules() -> list[Path]:
    out = []
    for top in SCANNED:
        for p in sorted((ROOT / top).rglob("*.py")):
            if EXEMPT not in p.parents:
                out.append(p)
    return out


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the Constant nodes that are docstrings."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                ids.add(id(body[0].value))
    return ids


def name_literals(path: Path, names: set[str], root: Path = ROOT) -> list[str]:
    """``path:line: 'name'`` for every string constant of the code equal to one of names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _docstrings(tree)
    rel = path.relative_to(root)
    return [f"{rel}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in skip and node.value in names]


def _groups() -> dict[str, list[Path]]:
    """Modules by package (decomp/<sub>, kernels, topologies), one test case each."""
    groups: dict[str, list[Path]] = {}
    for p in _modules():
        rel = p.relative_to(ROOT).parts
        key = "/".join(rel[:2]) if rel[0] == "decomp" and len(rel) > 2 else rel[0] if \
            rel[0] != "decomp" else "decomp (top-level modules)"
        groups.setdefault(key, []).append(p)
    return groups


GROUPS = _groups()
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_no_algorithm_name_literal_outside_the_algorithms(group: str) -> None:
    names = set(REGISTRY)
    hits = [h for p in GROUPS[group] for h in name_literals(p, names)]
    assert not hits, ("algorithm names written outside decomp/algorithms/ (read the class or "
                      "its registry line instead):\n" + "\n".join(hits))


def test_the_scan_finds_a_literal(tmp_path: Path) -> None:
    """The detector itself: a comparison is found, docstrings are not."""
    name = next(iter(REGISTRY))
    probe = tmp_path / "probe.py"
    probe.write_text(f'"""Mentions {name} in prose: {name!r}."""\n\n\ndef f(x):\n'
                     f'    """{name}"""\n    return x == {name!r}\n')
    assert name_literals(probe, {name}, tmp_path) == [f"probe.py:6: {name!r}"]
