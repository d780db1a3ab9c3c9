"""decomp.Trainer on one process (MPI.COMM_SELF): API, history, metrics file, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch  # (pinned dependency: missing = a broken install, not a skip)
from torch import nn  # noqa: E402

from decomp.algorithms import EF21, GD  # noqa: E402
from decomp.algorithms.ef21_sgdm import EF21SGDM  # noqa: E402
from decomp.compress import TopK  # noqa: E402
from decomp.data.classification import load  # noqa: E402
from decomp.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def self_comm():
    from mpi4py import MPI

    return MPI.COMM_SELF


def _data():
    return load("synthetic", n_samples=400, n_features=10, n_classes=3)


def test_import_decomp_does_not_import_torch() -> None:
    code = ("import sys, decomp; assert 'torch' not in sys.modules; "
            "T = decomp.Trainer; assert 'torch' in sys.modules; print(T.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0 and out.stdout.strip() == "Trainer", out.stderr


def test_fit_trains_records_history_and_writes_metrics(self_comm, tmp_path: Path,
                                                        capsys) -> None:
    import decomp

    path = tmp_path / "m" / "metrics.jsonl"
    tr = decomp.Trainer("mlp", nn.CrossEntropyLoss(), _data(),
                        algorithm=EF21(TopK(ratio=0.1)), lr=0.1, batch_size=16, comm=self_comm,
                        metrics_path=path)
    out = capsys.readouterr().out
    assert "label counts per worker" in out
    hist = tr.fit(steps=60, eval_every=20)
    assert [h["step"] for h in hist] == [0, 20, 40, 60]
    assert set(hist[0]) == {"step", "loss", "test_loss", "test_acc", "bits_up", "bits_down",
                            "wall_s", "compute_s", "compress_s", "comm_s"}  # split: both families
    assert hist[-1]["test_acc"] > 0.8 > hist[0]["test_acc"]
    assert hist[-1]["test_loss"] < hist[0]["test_loss"]
    rows = [json.loads(s) for s in path.read_text().splitlines()]
    assert rows == hist
    assert hist[-1]["wall_s"] >= hist[1]["wall_s"] > 0
    more = tr.fit(steps=10)  # continues, appends
    assert more[-1]["step"] == 70 and len(path.read_text().splitlines()) == 5
    np.testing.assert_array_equal(tr.x, tr.state.x)


def test_lr_comes_from_the_trainer_or_the_algorithm(self_comm) -> None:
    import decomp

    data = _data()
    t = decomp.Trainer("mlp", nn.CrossEntropyLoss(), data, algorithm=EF21SGDM(TopK(3), lr=0.05),
                       batch_size=8, comm=self_comm, verbose=False)
    assert t.lr == 0.05
    with pytest.raises(ConfigError, match="explicit lr"):
        decomp.Trainer("mlp", nn.CrossEntropyLoss(), data, algorithm=GD(batch_size=8),
                       comm=self_comm, verbose=False)
    with pytest.raises(ConfigError, match="batch_size=4"):
        decomp.Trainer("mlp", nn.CrossEntropyLoss(), data, algorithm=GD(batch_size=8),
                       batch_size=4, lr=0.1, comm=self_comm, verbose=False)
    with pytest.raises(ConfigError, match="buffers"):
        decomp.Trainer("mlp", nn.CrossEntropyLoss(), data, lr=0.1, buffers="sum",
                       comm=self_comm, verbose=False)


def test_decentralized_algorithms_train_on_one_node_and_bad_combinations_are_refused(
        self_comm, tmp_path: Path) -> None:
    import decomp
    from decomp.algorithms import DCDPSGD, DPSGD
    from decomp.compress import QSGD

    path = tmp_path / "d.jsonl"
    tr = decomp.Trainer("mlp", nn.CrossEntropyLoss(), _data(),
                        algorithm=DCDPSGD(QSGD(levels=127), lr=0.1), batch_size=16,
                        comm=self_comm, topology="ring", metrics_path=path, verbose=False)
    hist = tr.fit(steps=40, eval_every=20)
    assert [h["step"] for h in hist] == [0, 20, 40]
    assert {"test_acc_mean", "test_acc_min", "test_acc_i", "consensus_distance",
            "compute_s"} <= set(hist[-1])
    assert hist[-1]["test_acc"] > 0.8 > hist[0]["test_acc"]
    assert hist[-1]["test_acc_i"] == [hist[-1]["test_acc"]]  # one node: x_1 = x̄
    assert hist[-1]["bits_up"] == 0  # no neighbours, nothing sent
    assert [json.loads(s) for s in path.read_text().splitlines()] == hist
    assert np.shares_memory(tr.x, next(tr.model.parameters()).detach().numpy())
    assert "1 nodes on ring" in repr(tr)

    class FakeGossip:
        family = "decentralized"
        batch_size = None

    with pytest.raises(ConfigError, match="not a decomp algorithm"):
        decomp.Trainer("mlp", nn.CrossEntropyLoss(), _data(), algorithm=FakeGossip(), lr=0.1,
                       comm=self_comm, verbose=False)
    with pytest.raises(ConfigError, match="not a decomp algorithm"):
        decomp.Trainer("mlp", nn.CrossEntropyLoss(), _data(), algorithm=object(), lr=0.1,
                       comm=self_comm, verbose=False)
    with pytest.raises(ConfigError, match="master='dedicated' applies to the master–worker"):
        decomp.Trainer("mlp", nn.CrossEntropyLoss(), _data(), algorithm=DPSGD(lr=0.1),
                       master="dedicated", comm=self_comm, verbose=False)
    with pytest.raises(ConfigError, match="topology applies to the decentralized family"):
        decomp.Trainer("mlp", nn.CrossEntropyLoss(), _data(), algorithm=GD(lr=0.1),
                       topology="ring", comm=self_comm, verbose=False)
    with pytest.raises(ConfigError, match="unbiased"):
        DCDPSGD(TopK(3))


def test_a_user_module_is_trained_in_place(self_comm) -> None:
    import decomp

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
    w0 = net[0].weight.detach().clone()
    tr = decomp.Trainer(net, nn.CrossEntropyLoss(), _data(), algorithm=GD(), lr=0.5,
                        batch_size=32, comm=self_comm, verbose=False, progress=False)
    tr.fit(steps=5)
    assert tr.model is net and not torch.equal(net[0].weight.detach(), w0)
    assert np.shares_memory(tr.x, net[0].weight.detach().numpy())


def test_sparse_libsvm_features_and_integer_labels_train(self_comm, tmp_path: Path) -> None:
    import decomp

    rng = np.random.default_rng(0)
    lines = []
    for _ in range(120):
        label = int(rng.integers(0, 2))
        feats = {j: float(rng.standard_normal() + (2.0 if label else -2.0) * (j == 1))
                 for j in sorted({1, *rng.choice(np.arange(2, 21), 3, replace=False).tolist()})}
        lines.append(f"{2 * label - 1} " + " ".join(f"{j}:{v:.3f}" for j, v in feats.items()))
    (tmp_path / "toy").write_text("\n".join(lines) + "\n")
    data = load("libsvm:toy", data_dir=tmp_path, sparse=True)
    tr = decomp.Trainer("mlp", nn.CrossEntropyLoss(), data, algorithm=EF21(TopK(ratio=0.2)),
                        lr=0.2, batch_size=16, comm=self_comm, verbose=False)
    hist = tr.fit(steps=40)
    assert hist[-1]["test_acc"] > 0.8


def test_the_step_size_changes_by_assignment_or_a_schedule(self_comm) -> None:
    import decomp

    def run(schedule: bool) -> np.ndarray:
        tr = decomp.Trainer("mlp", nn.CrossEntropyLoss(), _data(), algorithm=GD(), lr=0.1,
                            batch_size=16, comm=self_comm, verbose=False)
        if schedule:
            tr.fit(10, lr_schedule=lambda t: 0.1 if t <= 5 else 0.05)
        else:
            tr.fit(5)
            tr.lr = 0.05
            tr.fit(5)
        assert tr.lr == 0.05 and tr.state_dict()["lr"] == 0.05
        return tr.x.copy()

    assert np.array_equal(run(True), run(False))
    with pytest.raises(ConfigError, match="positive"):
        decomp.Trainer("mlp", nn.CrossEntropyLoss(), _data(), algorithm=GD(), lr=0.1,
                       comm=self_comm, verbose=False).lr = 0.0


def test_the_users_algorithm_object_is_never_modified(self_comm) -> None:
    import decomp

    alg = EF21(TopK(ratio=0.1), lr=0.1)
    tr = decomp.Trainer("mlp", nn.CrossEntropyLoss(), _data(), algorithm=alg, batch_size=16,
                        comm=self_comm, verbose=False)
    assert alg.batch_size is None  # the user's object is as it was
    assert tr.algorithm is not alg and tr.algorithm.batch_size == 16
    tr.fit(steps=2)
    assert alg.batch_size is None
    same = decomp.Trainer("mlp", nn.CrossEntropyLoss(), _data(), algorithm=alg, lr=0.1,
                          comm=self_comm, verbose=False)
    assert same.algorithm.batch_size is None  # the first Trainer left nothing behind


def test_powersgd_trains_on_the_models_tensors(self_comm) -> None:
    """PowerSGD through the Trainer gets the model's layout: its weight matrices go low rank
    (fewer bits than GD's dense all-reduce, by the bytes formula), and it still learns."""
    import decomp
    from decomp.algorithms import PowerSGD

    hists = {}
    for name, alg in {"gd": GD(), "powersgd": PowerSGD(rank=2)}.items():
        tr = decomp.Trainer("mlp", nn.CrossEntropyLoss(), _data(), algorithm=alg, lr=0.1,
                            batch_size=16, comm=self_comm, seed=1)
        hists[name] = tr.fit(steps=60, eval_every=60)
        if name == "powersgd":
            layout = tr.flat.layout
            want = sum(c.nbytes for c in alg.comm_pattern(layout.d, 1, dtype=np.float32,
                                                          layout=layout))
            assert hists[name][-1]["bits_up"] == 60 * want * 8
            assert want < layout.d * 4
    assert hists["powersgd"][-1]["test_acc"] > 0.7 > hists["powersgd"][0]["test_acc"]
    assert hists["powersgd"][-1]["bits_up"] < hists["gd"][-1]["bits_up"]
