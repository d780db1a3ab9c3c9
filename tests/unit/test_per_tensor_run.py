"""Per-tensor compressors through the front ends: ``decomp sim``'s config path (a numpy
problem: one slot, so per-tensor Top-k is the flat operator with a longer wire) and the
Trainer on a torch model (bound to ``FlatModel.layout``; the user's algorithm untouched)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decomp.compress import PerTensor, TopK, make_compressor
from decomp.config import load_config
from decomp.layout import Layout
from decomp.runner.simulate import simulate_config

CONFIG = """
name = "pt"
seed = 3
[problem]
kind = "logistic"
dataset = "breast_cancer"
scale = "standard"
lam = 0.1
[run]
steps = 20
log_every = 10
[[methods]]
name = "flat"
algorithm = "ef21"
compressor = { kind = "topk", k = 2 }
lr = "theory"
[[methods]]
name = "per-tensor"
algorithm = "ef21"
compressor = { kind = "topk", k = 2, per_tensor = true }
lr = "theory"
"""


def test_sim_config_with_per_tensor_compressor(tmp_path: Path) -> None:
    path = tmp_path / "pt.toml"
    path.write_text(CONFIG)
    res = {r.method: r for r in simulate_config(load_config(path), 4)}
    flat, pt = res["flat"], res["per-tensor"]
    assert flat.status == pt.status == "ok"
    # one slot: the same operator (alpha, theory step, iterates), a longer wire
    assert (pt.loss, pt.grad_norm_sq, pt.lr) == (flat.loss, flat.grad_norm_sq, flat.lr)
    per_msg = PerTensor(TopK(k=2), Layout.flat(30)).payload_bytes(30)
    assert per_msg == TopK(k=2).payload_bytes(30) + 16 + 4  # the outer header + padding
    assert pt.bits_up == flat.bits_up * per_msg / TopK(k=2).payload_bytes(30)


def test_trainer_binds_to_the_model_layout() -> None:
    pytest.importorskip("torch")
    from mpi4py import MPI
    from torch import nn

    import decomp
    from decomp.algorithms import EF21
    from decomp.data.classification import load

    recipe = make_compressor({"kind": "topk", "ratio": 0.05, "per_tensor": True})
    alg = EF21(recipe)
    tr = decomp.Trainer("mlp", nn.CrossEntropyLoss(), load("synthetic", n_samples=300,
                                                           n_features=10, n_classes=3),
                        algorithm=alg, lr=0.1, batch_size=16, comm=MPI.COMM_SELF,
                        verbose=False, progress=False)
    hist = tr.fit(steps=30, eval_every=30)
    assert alg.compressor is recipe and not recipe.bound  # the user's object is untouched
    C = tr.session.algorithm.compressor
    assert isinstance(C, PerTensor) and C.layout == tr.flat.layout and len(C.layout) > 1
    assert hist[-1]["test_loss"] < hist[0]["test_loss"]
    assert hist[-1]["bits_up"] == 8 * 31 * C.payload_bytes(C.layout.d, np.float32)
