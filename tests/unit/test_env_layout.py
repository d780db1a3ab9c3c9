"""Env.layout: env.codec binds a per-tensor recipe to the model's layout (None: the numpy
problem's one slot), once per compressor object; other compressors pass through."""

from __future__ import annotations

import numpy as np
import pytest

from decomp.algorithms import Env
from decomp.comm import MasterWorker
from decomp.compress import PerTensor, TopK, make_compressor
from decomp.errors import UsageError
from decomp.layout import Layout
from decomp.problems import LeastSquares


def _env(layout: Layout | None, problem: bool = True) -> Env:
    from mpi4py import MPI

    p = LeastSquares(np.ones((4, 6)), np.ones(4)) if problem else None
    return Env(MasterWorker(MPI.COMM_SELF), p, 1, 0, 0.1, layout=layout)


def test_codec_binds_a_recipe_to_the_env_layout() -> None:
    L = Layout.from_shapes([("w", (2, 2)), ("b", (2,))])
    recipe = make_compressor({"kind": "topk", "ratio": 0.5, "per_tensor": True})
    env = _env(L)
    c = env.codec(recipe)
    assert isinstance(c.inner, PerTensor) and c.inner.layout == L and not recipe.bound
    assert env.codec(recipe) is c  # kept for the run
    flat = TopK(k=1)
    assert env.codec(flat).inner is flat


def test_no_layout_means_the_problems_one_slot() -> None:
    recipe = make_compressor({"kind": "qsgd", "levels": 2, "per_tensor": True})
    assert _env(None).codec(recipe).inner.layout == Layout.flat(6)
    with pytest.raises(UsageError, match="layout"):
        _env(None, problem=False).codec(recipe)
