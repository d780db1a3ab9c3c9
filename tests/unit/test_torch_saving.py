"""``opt.should_stop``/``save``/``load``/``export`` and ``MetricsWriter`` on one process
(MPI.COMM_SELF), and the collective-call verdict's messages. Four ranks under mpiexec (SIGTERM
in a loop, resume bit for bit, a rank-0-only save): tests/e2e/test_torch_preemption.py."""

from __future__ import annotations

import io
import json
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from decomp.algorithms import EF21
from decomp.compress import TopK
from decomp.errors import ConfigError
from decomp.report.runs import load_run
from decomp.runner.lifecycle import SIGNALS
from decomp.torch import DistributedOptimizer, MetricsWriter
from decomp.torch.preempt import _verdict
from decomp.torch.saving import rng_state, set_rng_state


@pytest.fixture(scope="module")
def comm():
    from mpi4py import MPI

    return MPI.COMM_SELF


@pytest.fixture()
def signals():
    """Leave the process's signal handling as it was (should_stop installs the handlers)."""
    yield
    SIGNALS.__exit__()
    SIGNALS.signum, SIGNALS.deferred = 0, False


def _setup(comm, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(8, 3))
    inner = torch.optim.AdamW(model.parameters(), lr=1e-2)
    opt = DistributedOptimizer(inner, model, EF21(TopK(ratio=0.3)), comm=comm, seed=3)
    sched = torch.optim.lr_scheduler.StepLR(inner, step_size=2, gamma=0.5)
    return model, opt, sched


def _train(model, opt, sched, steps: int) -> None:
    g = torch.Generator().manual_seed(7)
    X, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    while opt.steps < steps:
        idx = torch.randint(0, 64, (16,))  # the global generator: saved and restored
        opt.zero_grad()
        nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
        sched.step()


def test_verdict_names_the_missing_ranks_and_the_first_difference() -> None:
    assert _verdict("opt.save", {r: ("opt.save", 4, "/c") for r in range(3)}, 3, 5) == ""
    msg = _verdict("opt.save", {0: ("opt.save", 4, "/c")}, 4, 5)
    assert msg.startswith("opt.save() is collective: rank 0 called it at step 4, but ranks "
                          "1, 2, 3 did not within 5 s — nothing was written")
    msg = _verdict("opt.save", {0: ("opt.save", 4, "/c"), 1: ("opt.save", 5, "/c")}, 2, 5)
    assert "differ in their steps: rank 0 opt.save() at step 4 on '/c', rank 1 opt.save() at " \
           "step 5" in msg
    msg = _verdict("opt.save", {0: ("opt.save", 4, "/a"), 1: ("opt.save", 4, "/b")}, 2, 5)
    assert "differ in their paths" in msg


def test_rng_state_round_trips_through_a_weights_only_load() -> None:
    torch.manual_seed(1)
    np.random.seed(2)  # noqa: NPY002 (the user's global generators are what is saved)
    random.seed(3)
    buf = io.BytesIO()
    torch.save(rng_state(), buf)
    want = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    buf.seek(0)
    set_rng_state(torch.load(buf, weights_only=True))
    got = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) \
        and want[2] == got[2]


def test_save_load_continues_bit_for_bit(comm, tmp_path: Path) -> None:
    model, opt, sched = _setup(comm)
    torch.manual_seed(11)
    _train(model, opt, sched, 10)
    want = {k: v.clone() for k, v in model.state_dict().items()}

    model, opt, sched = _setup(comm)
    torch.manual_seed(11)
    _train(model, opt, sched, 4)
    opt.save(tmp_path / "ckpt", scheduler=sched, extra={"epoch": 1})
    _train(model, opt, sched, 6)
    opt.save(tmp_path / "ckpt", scheduler=sched, extra={"epoch": 2})  # replaces step 4's
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["checkpoint.json", "s6"]

    model, opt, sched = _setup(comm, seed=5)  # another start: everything comes from the folder
    torch.manual_seed(99)
    assert opt.load(tmp_path / "ckpt", scheduler=sched) == {"epoch": 2}
    assert opt.steps == 6 and sched.last_epoch == 6
    _train(model, opt, sched, 10)
    for k, v in model.state_dict().items():
        assert torch.equal(v, want[k]), k


def test_load_refusals_name_the_cause(comm, tmp_path: Path) -> None:
    model, opt, sched = _setup(comm)
    assert opt.load(tmp_path / "none", missing_ok=True) is None
    with pytest.raises(ConfigError, match="no checkpoint there .*missing_ok=True"):
        opt.load(tmp_path / "none")
    _train(model, opt, sched, 2)
    opt.save(tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="saved without an LR scheduler: pass scheduler="):
        _setup(comm)[1].load(tmp_path / "ckpt", scheduler=sched)
    rank_file = tmp_path / "ckpt" / "s2" / "rank0.pt"
    rank_file.write_bytes(rank_file.read_bytes()[:-8] + b"corrupt!")
    with pytest.raises(ConfigError, match=r"rank0.pt is corrupt \(its sha256 differs"):
        _setup(comm)[1].load(tmp_path / "ckpt")
    torch.manual_seed(0)
    other = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    opt2 = DistributedOptimizer(torch.optim.SGD(other.parameters(), lr=0.1), other,
                                EF21(TopK(ratio=0.3)), comm=comm)
    with pytest.raises(ConfigError, match="saved with d 99, this optimizer has 43"):
        opt2.load(tmp_path / "ckpt")


def test_export_is_a_plain_state_dict(comm, tmp_path: Path) -> None:
    model, opt, sched = _setup(comm)
    _train(model, opt, sched, 3)
    path = opt.export(tmp_path / "out" / "model.pt")
    fresh = _setup(comm, seed=4)[0]
    fresh.load_state_dict(torch.load(path))  # weights_only
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_should_stop_after_a_signal_and_the_metrics_writer(comm, tmp_path: Path,
                                                           signals) -> None:
    model, opt, sched = _setup(comm)
    writer = MetricsWriter(opt, tmp_path / "run", name="mine")
    assert not opt.should_stop() and opt.exit_code == 0
    _train(model, opt, sched, 2)
    writer.log(loss=0.5, test_acc=0.25)
    os.kill(os.getpid(), signal.SIGUSR1)  # only recorded: the loop goes on to the vote
    assert opt.should_stop() and opt.should_stop()  # one process: at once, and it stays
    assert (opt.stop_signal, opt.exit_code) == (signal.SIGUSR1, 138)
    writer.close()
    run = load_run(tmp_path / "run")
    [m] = run.methods
    assert m.label == "mine" and m.rows[0]["step"] == 2 and m.rows[0]["loss"] == 0.5
    assert {"bits_up", "bits_down", "consensus_distance", "wall_s", "test_acc"} <= set(m.rows[0])
    assert m.summary["status"] == "interrupted"
    assert "stopped by SIGUSR1 at step 2" in m.summary["message"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["run"]["front_end"] \
        == "decomp.torch.MetricsWriter"
