"""Checkpoints record the model's layout; loading one written for another layout is refused
with a message naming the difference and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from decomp.errors import ConfigError
from decomp.layout import Layout
from decomp.runner.checkpoint import CheckpointStore, check_layout


class _Comm:
    """A one-rank stand-in for an MPI communicator."""

    def Get_rank(self) -> int:  # noqa: N802
        return 0

    def Get_size(self) -> int:  # noqa: N802
        return 1

    def allgather(self, x: Any) -> list[Any]:
        return [x]

    def Barrier(self) -> None:  # noqa: N802
        pass


class _State(NamedTuple):
    x: np.ndarray
    step: int


MLP = Layout.from_shapes([("fc1.weight", (4, 3)), ("fc1.bias", (4,))])
OTHER = Layout.from_shapes([("fc1.weight", (3, 4)), ("fc1.bias", (4,))])


def _save(tmp_path: Path, layout: Layout | None) -> dict[str, Any]:
    store = CheckpointStore(tmp_path, _Comm(), layout=layout)
    store.save(0, 5, _State(np.arange(16.0), 5), {}, [], {"seed": 1})
    pointer = store.read_pointer(0)
    assert pointer is not None
    return pointer


def test_layout_is_recorded_and_checked(tmp_path: Path) -> None:
    pointer = _save(tmp_path, MLP)
    assert Layout.from_dict(pointer["layout"]) == MLP
    arrays, _, _ = CheckpointStore(tmp_path, _Comm(), layout=MLP).load(pointer)
    assert np.array_equal(arrays["x"], np.arange(16.0))
    store = CheckpointStore(tmp_path, _Comm())
    store.layout = OTHER
    with pytest.raises(ConfigError, match=r"another model layout.*tensor 0.*\[4, 3\].*\[3, 4\]"):
        store.load(pointer)
    with pytest.raises(ConfigError, match="tensor 0: saved 'fc1.weight'"):
        check_layout(pointer, Layout.flat(16))
    with pytest.raises(ConfigError, match="saved 2 tensors, now 3"):
        check_layout(pointer, Layout.from_shapes([*((s.name, s.shape) for s in MLP),
                                                  ("extra", (1,))]))
    CheckpointStore(tmp_path, _Comm()).load(pointer)  # layout unknown: not checked


def test_pointer_without_layout_is_accepted(tmp_path: Path) -> None:
    pointer = _save(tmp_path, None)
    assert "layout" not in pointer
    CheckpointStore(tmp_path, _Comm(), layout=MLP).load(pointer)
    with pytest.raises(ConfigError, match="malformed"):
        check_layout({"layout": {"slots": [{"name": "a"}]}}, MLP)
