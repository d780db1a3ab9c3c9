"""Torch models over MPI equal decomp.sim on the same flat problems; Trainer plumbing.

Run as ``mpiexec -n N python -m pytest --with-mpi tests/mpi`` (N = 2, 4). Results are gathered
before asserting so a failing check cannot leave another rank blocked in a collective.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch  # noqa: F401  (pinned: missing = a broken install, not a skip)
from _torch_case import (  # noqa: E402
    SEED,  # noqa: E402
    LossRecorder,
    reference_train_loss,
)
from _torch_case import net as _net  # noqa: E402
from _torch_case import problems as _problems  # noqa: E402
from torch import nn  # noqa: E402

from decomp.algorithms import DCGD, EF, EF21, GD, EF21Plus, Env  # noqa: E402
from decomp.algorithms.ef21_sgdm import EF21SGDM  # noqa: E402
from decomp.algorithms.sgdm import SGDM  # noqa: E402
from decomp.comm import MasterWorker  # noqa: E402
from decomp.compress import Identity, TopK  # noqa: E402
from decomp.data.classification import load  # noqa: E402
from decomp.sim import reference, simulate  # noqa: E402
from decomp.torch import FlatModel, make_torch_problems  # noqa: E402

STEPS = 8
LR = 0.2
TOL = 2e-6  # float32, relative to max |x|: 4x the largest deviation seen (2.2e-7, 8 steps)

#: case -> the algorithm object (run over MPI and handed to its reference)
CASES: dict[str, Any] = {
    "gd": lambda: GD(),
    "sgd": lambda: GD(batch_size=8),
    "dcgd": lambda: DCGD(Identity()),
    "ef-top": lambda: EF(TopK(ratio=0.05), batch_size=8),
    "ef21-top": lambda: EF21(TopK(ratio=0.05)),
    "ef21-sgd-top": lambda: EF21(TopK(ratio=0.05), batch_size=8),
    "ef21-plus": lambda: EF21Plus(TopK(ratio=0.05)),
    "ef21-sgdm": lambda: EF21SGDM(TopK(ratio=0.05), eta=0.3, batch_size=8),
    "sgdm": lambda: SGDM(momentum=0.9, batch_size=8),
    "sgdm-nesterov": lambda: SGDM(momentum=0.5, nesterov=True, batch_size=8),
}


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("master,bn", [("shared", False), ("dedicated", True)])
def test_torch_iterates_equal_the_reference(comm, case: str, master: str, bn: bool) -> None:
    alg = CASES[case]()
    tp = MasterWorker(comm, master)
    probs = _problems(tp.n_workers, bn)
    x0 = probs[0].flat.params.copy()
    mine = _problems(tp.n_workers, bn)[tp.worker] if tp.is_worker else None
    env = Env(tp, mine, tp.n_workers, SEED, LR)
    state = alg.init(env, x0)
    xs = [state.x.copy()]
    for _ in range(STEPS):
        state = alg.step(env, state)
        xs.append(state.x.copy())
    X = np.stack(xs)
    tr = reference(alg, probs, x0, lr=LR, steps=STEPS, seed=SEED)
    rel = float(np.abs(X - tr.xs).max() / np.abs(tr.xs).max())
    moved = float(np.abs(X[-1] - X[0]).max())
    rels = comm.allgather((rel, moved, X.dtype.str))
    sent = comm.allgather((tp.worker, tp.bytes.up))
    assert all(r <= TOL for r, _, _ in rels), f"relative deviation per rank: {rels}"
    assert all(m > 0 for _, m, _ in rels) and {d for _, _, d in rels} == {"<f4"}
    for w, b in sent:
        if w is not None:
            assert b == tr.bytes_up[w]


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", ["sgd", "sgdm"])
def test_all_reduce_sgd_ranks_hold_identical_parameters_every_step(comm, case: str) -> None:
    tp = MasterWorker(comm)
    prob = _problems(tp.n_workers, False)[tp.worker]
    env = Env(tp, prob, tp.n_workers, SEED, LR)
    alg = CASES[case]()
    state = alg.init(env, prob.flat.params.copy())
    prob.flat.bind(state.x)  # the module is the iterate, as in the Trainer
    digests = []
    for _ in range(STEPS):
        state = alg.step(env, state)
        digests.append(state.x.tobytes())
    everyone = comm.allgather(digests)
    assert all(d == everyone[0] for d in everyone), "ranks disagree on x"
    assert np.shares_memory(state.x, next(prob.flat.parameters()).detach().numpy())


def _trainer(comm, algorithm, **kw):
    from decomp.torch.trainer import Trainer

    ds = load("synthetic", n_samples=300, n_features=10, n_classes=3)
    return ds, Trainer(_net(kw.pop("bn", False)), nn.CrossEntropyLoss(), ds,
                       algorithm=algorithm, comm=comm, seed=SEED, verbose=False, **kw)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("master", ["shared", "dedicated"])
def test_trainer_equals_the_reference_on_the_same_shards(comm, master: str) -> None:
    ds, tr = _trainer(comm, EF21(TopK(ratio=0.05)), lr=LR, batch_size=8, master=master,
                      partition="dirichlet", alpha=1.0)
    hist = tr.fit(steps=STEPS, eval_every=4)
    probs = [LossRecorder(p) for p in make_torch_problems(
        _net(False), nn.CrossEntropyLoss(), ds.X, ds.y, tr.parts, seed=SEED)]
    ref = simulate("ef21_sgd", probs, probs[0].flat.params.copy(), lr=LR, steps=STEPS,
                   seed=SEED, compressor=TopK(ratio=0.05), batch_size=8)
    rel = float(np.abs(tr.x - ref.xs[-1]).max() / np.abs(ref.xs[-1]).max())
    # the test metrics are those of x^T on the whole test set
    full = FlatModel(_net(False))
    from decomp.torch import evaluate_model

    tot, correct, cnt = evaluate_model(full, nn.CrossEntropyLoss(), tr.x, ds.X_test, ds.y_test)
    got = comm.allgather((rel, hist[-1]["test_acc"], hist[-1]["test_loss"]))
    assert all(r <= TOL for r, _, _ in got), got
    assert all(a == correct / cnt for _, a, _ in got)
    assert all(abs(lo - tot / cnt) <= 1e-6 * max(1.0, tot / cnt) for _, _, lo in got)
    assert [h["step"] for h in hist] == [0, 4, 8]
    assert hist[-1]["bits_up"] == 8 * ref.bytes_up.mean()
    # the training loss: the mean minibatch loss of steps 5..8 over the workers, as in the
    # reference run
    assert hist[0]["loss"] is None
    assert hist[-1]["loss"] == pytest.approx(reference_train_loss(probs, range(5, 9)),
                                             rel=2e-6)
    # the module's parameters are the algorithm's x (zero-copy)
    assert all(np.shares_memory(tr.x, p.detach().numpy()) for p in tr.model.parameters())


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("mode", ["average", "local"])
def test_batchnorm_statistics_are_averaged_or_kept_local(comm, mode: str) -> None:
    _, tr = _trainer(comm, SGDM(momentum=0.0), lr=0.1, batch_size=8, bn=True, buffers=mode,
                     partition="by_label")
    tr.init()
    for _ in range(3):
        tr.session.step()
    before = tr.flat.buffers.copy()
    all_before = comm.allgather(before)
    tr.evaluate()
    after = comm.allgather(tr.flat.buffers.copy())
    mean = np.mean(all_before, axis=0)
    if mode == "average":
        ok = [np.allclose(a, mean, rtol=1e-6, atol=1e-7) for a in after]
    else:
        ok = [np.array_equal(a, b) for a, b in zip(after, all_before, strict=True)]
    distinct = not np.allclose(all_before[0], all_before[1])  # by_label shards differ
    assert all(ok) and distinct


@pytest.mark.mpi(min_size=2)
def test_decentralized_evaluation_of_the_mean_and_every_node(comm) -> None:
    ds, tr = _trainer(comm, GD(), lr=0.1)
    rank, size = comm.Get_rank(), comm.Get_size()
    rng = np.random.default_rng(rank)
    xi = (tr.flat.params + 0.3 * rng.standard_normal(tr.flat.d)).astype(np.float32)
    res = tr.evaluate_decentralized(xi)
    everyone = np.stack(comm.allgather(xi))
    xbar = everyone.astype(np.float64).mean(axis=0)
    from decomp.torch import evaluate_model

    full = FlatModel(_net(False))
    tot, cor, cnt = evaluate_model(full, nn.CrossEntropyLoss(), xbar.astype(np.float32),
                                   ds.X_test, ds.y_test)
    accs = [evaluate_model(full, nn.CrossEntropyLoss(), everyone[i], ds.X_test,
                           ds.y_test)[1] / cnt for i in range(size)]
    cons = float(np.mean(np.sum((everyone - xbar) ** 2, axis=1)))
    got = comm.allgather(res)
    assert all(g == got[0] for g in got)
    assert res["test_acc"] == cor / cnt and res["test_acc_i"] == accs
    assert res["consensus_distance"] == pytest.approx(cons, rel=1e-9)
    np.testing.assert_array_equal(tr.flat.params, tr.x)  # the local model was restored
