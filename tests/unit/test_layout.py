"""Layout: an immutable, comparable, JSON-serialisable list of tensors tiling [0, d)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from decomp.layout import Layout, Slot, layout_of
from decomp.problems import LeastSquares


def test_slots_offsets_and_value_semantics() -> None:
    L = Layout.from_shapes([("w", (3, 4)), ("b", (4,)), ("s", ()), ("e", (0,))])
    assert L.d == 17 and len(L) == 4 and L.sizes == (12, 4, 1, 0)
    assert L.bounds == (0, 12, 16, 17, 17) and L.names == ("w", "b", "s", "e")
    assert L[1] == Slot("b", 12, (4,)) and L[1].stop == 16
    same = Layout([("w", 0, [3, 4]), ("b", 12, (4,)), ("s", 16, ()), ("e", 17, (0,))])
    assert same == L and hash(same) == hash(L) and {L: 1}[same] == 1
    assert L != Layout.flat(17) and Layout.flat(17) == Layout([Slot("x", 0, (17,))])
    with pytest.raises(AttributeError):
        L.d = 3  # type: ignore[misc]
    assert "w[3, 4]" in L.describe()


def test_json_round_trip() -> None:
    L = Layout.from_shapes([("conv.weight", (8, 3, 3, 3)), ("conv.bias", (8,))])
    doc = json.loads(json.dumps(L.to_dict()))
    assert Layout.from_dict(doc) == L
    with pytest.raises(ValueError, match="not a layout"):
        Layout.from_dict({"d": 3})
    with pytest.raises(ValueError, match="d = 5"):
        Layout.from_dict({**doc, "d": 5})


def test_invalid_layouts_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Layout([])
    with pytest.raises(ValueError, match="offset 1, expected 0"):
        Layout([("a", 1, (3,))])
    with pytest.raises(ValueError, match="gap or overlap"):
        Layout([("a", 0, (3,)), ("b", 2, (3,))])
    with pytest.raises(ValueError, match="twice"):
        Layout([("a", 0, (3,)), ("a", 3, (3,))])
    with pytest.raises(ValueError, match="non-negative"):
        Layout([("a", 0, (-1,))])
    with pytest.raises(TypeError):
        Layout([("a", 0, "x")])
    with pytest.raises(ValueError, match="d >= 1"):
        Layout.flat(0)
    with pytest.raises(ValueError, match="d = 5"):
        layout_of(4, Layout.flat(5))
    assert layout_of(4, None) == Layout.flat(4)


def test_numpy_problem_has_one_slot() -> None:
    p = LeastSquares(np.ones((5, 3)), np.ones(5))
    assert p.layout == Layout.flat(3)


def test_flat_model_layout() -> None:
    torch = pytest.importorskip("torch")
    from decomp.torch.flat import FlatModel

    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    fm = FlatModel(m)
    assert fm.layout == Layout.from_shapes([("0.weight", (3, 4)), ("0.bias", (3,)),
                                            ("2.weight", (2, 3)), ("2.bias", (2,))])
    assert fm.layout.d == fm.d
    for s in fm.layout:
        assert np.array_equal(fm.unflatten(fm.params)[s.name],
                              fm.params[s.offset:s.stop].reshape(s.shape))


def test_layout_imports_nothing_from_decomp() -> None:
    """Every layer may use the layout: it sits below them all."""
    import ast
    from pathlib import Path

    import decomp.layout

    tree = ast.parse(Path(decomp.layout.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if m.split(".")[0] == "decomp"], names
