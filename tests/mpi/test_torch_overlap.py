"""``DistributedOptimizer(overlap=True)`` over MPI (2 and 4 ranks): the bucketed all-reduce
posted from the backward hooks gives the iterates of the blocking all-reduce after backward.

- the same model after every step, bit for bit, for GD (own update and Adam), SGDM and
  AllreduceSGD, with one bucket per tensor, the automatic cap and one bucket;
- the buckets are posted during backward (before ``step()``), in bucket order;
- accumulation: ``no_sync()`` for all but the last micro-batch is bit for bit the blocking
  run; without it the result agrees to float32 rounding, with a warning;
- parameters without a gradient (on some ranks or all; ``find_unused_parameters`` on and off)
  neither hang nor change the iterates.

Results are gathered before asserting so a failing check cannot leave another rank blocked.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from decomp.algorithms import GD, SGDM, AllreduceSGD
from decomp.torch.optimizer import DistributedOptimizer

STEPS = 4
LR = 0.1
#: one bucket per tensor, DDP's default scaled to the model, one bucket for everything
CAPS = {"per-tensor": 1e-6, "auto": None, "one": 64.0}


class Net(nn.Module):
    """An MLP with a branch ``extra`` used only when ``use_extra`` and a never-used ``spare``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(10, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU())
        self.spare = nn.Linear(4, 4)  # registered before extra and head: buckets 4 and 5
        self.extra = nn.Linear(24, 24)
        self.head = nn.Linear(24, 3)
        self.use_extra = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        if self.use_extra:
            h = h + self.extra(h)
        return self.head(h)


def _batch(rank: int, step: int, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * rank + 10 * step + micro)
    return torch.randn(16, 10, generator=g), torch.randint(0, 3, (16,), generator=g)


def _run(comm: Any, make: Any, inner: str, *, overlap: bool, cap: float | None = None,
         micro: int = 1, no_sync: bool = True, extra: Any = None, steps: int = STEPS,
         resume: Any = None, first: int = 0, **kw: Any) -> tuple[np.ndarray, list[int], Any]:
    """STEPS steps of a user loop; x after each step, the buckets posted when backward
    returned (before step), and the optimizer."""
    model = Net()
    rank = comm.Get_rank()
    adam = torch.optim.Adam(model.parameters(), lr=1e-2) if inner == "adam" else None
    alg = make() if adam is not None else make(lr=LR)
    opts = {"overlap": True, "bucket_cap_mb": cap} if overlap else {}
    opt = DistributedOptimizer(adam, model, alg, comm=comm, seed=1, **opts, **kw)
    if resume is not None:  # (optimizer state_dict, model state_dict)
        model.load_state_dict(resume[1])
        opt.load_state_dict(resume[0])
    loss_fn = nn.CrossEntropyLoss()
    xs, posted = [], []
    for t in range(first, first + steps):
        model.use_extra = True if extra is None else extra(rank, t)
        opt.zero_grad()
        for m in range(micro):
            X, y = _batch(rank, t, m)
            last = m == micro - 1
            if no_sync and not last:
                with opt.no_sync():
                    loss_fn(model(X), y).backward()
            else:
                loss_fn(model(X), y).backward()
        posted.append(opt.buckets.posted if opt.buckets is not None else -1)
        opt.step()
        xs.append(opt.flat.params.copy())
    return np.stack(xs), posted, opt


CASES = {
    "gd-own": (lambda **k: GD(**k), "own"),
    "gd-adam": (lambda **k: GD(**k), "adam"),
    "sgdm-own": (lambda **k: SGDM(momentum=0.9, **k), "own"),
    "allreduce-sgd-own": (lambda **k: AllreduceSGD(**k), "own"),
}


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("cap", list(CAPS))
@pytest.mark.parametrize("case", list(CASES))
def test_overlapped_iterates_equal_the_blocking_ones(comm, case: str, cap: str) -> None:
    make, inner = CASES[case]
    ref, _, ref_opt = _run(comm, make, inner, overlap=False)
    X, posted, opt = _run(comm, make, inner, overlap=True, cap=CAPS[cap])
    nb = len(opt.buckets.buckets)
    # backward posts every bucket before the first holding ``spare`` (parameters 4, 5)
    lead = next(b for b, bk in enumerate(opt.buckets.buckets) if {4, 5} & set(bk.params))
    b, rb = opt.bytes, ref_opt.bytes
    got = comm.allgather((bool(np.array_equal(X, ref)), posted == [lead] * STEPS, nb,
                          X[-1].tobytes(), b.up == rb.up, b.down == rb.down))
    assert all(g[0] for g in got), case
    # posted from the hooks during backward, before step() was called
    assert all(g[1] for g in got)
    assert len({g[2] for g in got}) == 1
    assert got[0][2] == {"per-tensor": 10, "auto": got[0][2], "one": 1}[cap]
    assert len({g[3] for g in got}) == 1  # the same model on every rank
    assert all(g[4] and g[5] for g in got)  # the blocking all-reduce's byte counts


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("inner", ["own", "adam"])
def test_accumulation_with_no_sync_is_exact_and_without_it_close(comm, inner: str) -> None:
    make = CASES["gd-own"][0]
    ref, _, _ = _run(comm, make, inner, overlap=False, micro=3, no_sync=False)
    X, posted, opt = _run(comm, make, inner, overlap=True, cap=1e-6, micro=3)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        Y, _, opt2 = _run(comm, make, inner, overlap=True, cap=1e-6, micro=3, no_sync=False)
    warned = any("no_sync" in str(m.message) for m in w)
    rel = float(np.abs(Y - ref).max() / np.abs(ref).max())
    got = comm.allgather((bool(np.array_equal(X, ref)), posted, rel, warned,
                          opt2.buckets.rounds_discarded))
    assert all(g[0] for g in got)
    assert all(g[1] == [4] * STEPS for g in got)  # by the last micro-batch only (up to spare)
    assert all(g[2] <= 1e-5 for g in got), [g[2] for g in got]
    assert all(g[3] for g in got)
    assert all(g[4] == 2 * STEPS for g in got)  # two discarded rounds per step


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("find_unused", [False, True])
@pytest.mark.parametrize("who", ["some-ranks", "alternate-steps"])
def test_parameters_without_gradients_do_not_hang(comm, find_unused: bool, who: str) -> None:
    """``spare`` never gets a gradient; ``extra`` only on rank 0 (or on odd steps): its
    bucket, and every later one, goes at step() on the ranks without it."""
    extra = ((lambda rank, t: rank == 0) if who == "some-ranks"
             else (lambda rank, t: t % 2 == 1))
    make = CASES["gd-adam"][0]
    kw = {"find_unused_parameters": find_unused}
    ref, _, _ = _run(comm, make, "adam", overlap=False, extra=extra, **kw)
    X, posted, opt = _run(comm, make, "adam", overlap=True, cap=1e-6, extra=extra, **kw)
    spare = [p.grad is None for p in opt.model.spare.parameters()]
    rank = comm.Get_rank()
    used = [4 if extra(rank, t) else 2 for t in range(STEPS)]
    got = comm.allgather((bool(np.array_equal(X, ref)), posted == used, spare))
    assert all(g[0] for g in got)
    # buckets in order: head (0, 1), extra (2, 3), spare (4, 5), body: backward posts the
    # head's and, where used, the extra layer's; spare holds the rest until step()
    assert all(g[1] for g in got)
    assert all(all(g[2]) == find_unused for g in got)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("make", [lambda: GD(lr=LR), lambda: SGDM(momentum=0.9, lr=LR),
                                  lambda: AllreduceSGD(lr=LR)])
def test_trainer_overlapped_equals_blocking(comm, make) -> None:
    from decomp.data.classification import load
    from decomp.torch.trainer import Trainer

    ds = load("synthetic", n_samples=300, n_features=10, n_classes=3)
    xs, hists, posted = [], [], []
    for overlap in (False, True):
        opts = {"overlap": True, "bucket_cap_mb": 1e-6} if overlap else {}
        tr = Trainer(Net(), nn.CrossEntropyLoss(), ds, algorithm=make(), comm=comm, seed=3,
                     batch_size=8, verbose=False, progress=False, **opts)
        if overlap:  # post during the problem's backward: count what was posted by then
            prob, inner = tr.problem, tr.problem.minibatch_grad

            def grad(x, rows, prob=prob, inner=inner, buckets=tr.buckets):
                g = inner(x, rows)
                posted.append(buckets.posted)
                return g

            prob.minibatch_grad = grad
        hists.append([(h["step"], h["loss"], h["test_acc"]) for h in tr.fit(6, eval_every=3)])
        xs.append(tr.x.copy())
    got = comm.allgather((bool(np.array_equal(xs[0], xs[1])), hists[0] == hists[1], posted))
    assert all(g[0] and g[1] for g in got)
    assert all(g[2] == [4] * 6 for g in got)  # head and extra; spare holds the rest


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("bad", [0, -2.5, float("nan"), "25"])
def test_a_bad_bucket_cap_is_the_same_clear_error_on_every_rank(comm, bad) -> None:
    from decomp.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        DistributedOptimizer(None, Net(), GD(lr=LR), comm=comm, overlap=True,
                             bucket_cap_mb=bad)
    got = comm.allgather(str(err.value))
    assert len(set(got)) == 1 and "bucket_cap_mb must be a positive number of MiB" in got[0]
    comm.Barrier()  # nothing left in flight: the ranks meet again


# --- compressed methods: per-bucket compression during backward (overlap_compressed) ---------
def _compressed_cases() -> dict[str, Any]:
    from decomp.algorithms import DCGD, EF21, PowerSGD
    from decomp.compress import PerTensor, RandK, TopK

    return {  # spare (4×4) goes dense under PowerSGD's default min_compression_rate = 2
        "ef21-topk": lambda **k: EF21(PerTensor(TopK(ratio=0.3)), **k),
        "dcgd-randk": lambda **k: DCGD(PerTensor(RandK(ratio=0.3)), **k),
        "powersgd-r1": lambda **k: PowerSGD(rank=1, **k),
        "powersgd-r4": lambda **k: PowerSGD(rank=4, **k),
        # a fresh Q every step (drawn at the first bucket), and 2 dense warm-up steps
        "powersgd-cold": lambda **k: PowerSGD(rank=2, warm_start=False, **k),
        "powersgd-warm-up": lambda **k: PowerSGD(rank=1, start_iter=2, **k),
    }


def _sent_run(comm: Any, make: Any, inner: str, *, overlap: bool, **kw: Any) -> Any:
    """_run, also recording the buckets compressed and sent by the hooks before step()."""
    sent: list[int] = []
    real_step = DistributedOptimizer.step

    def step(self: Any, *a: Any) -> Any:
        sent.append(self.buckets.sent if self.buckets is not None else -1)
        return real_step(self, *a)

    DistributedOptimizer.step = step  # type: ignore[method-assign]
    try:
        X, _, opt = _run(comm, make, inner, overlap=overlap, **kw)
    finally:
        DistributedOptimizer.step = real_step  # type: ignore[method-assign]
    return X, sent, opt


#: (method, inner optimizer, cap): every method, cap and optimizer, not every combination
COMPRESSED_COMBOS = [("ef21-topk", "own", "per-tensor"), ("ef21-topk", "adam", "auto"),
                     ("ef21-topk", "own", "one"), ("dcgd-randk", "adam", "per-tensor"),
                     ("powersgd-r1", "own", "per-tensor"), ("powersgd-r1", "adam", "one"),
                     ("powersgd-r4", "adam", "per-tensor"), ("powersgd-r4", "own", "auto"),
                     ("powersgd-cold", "own", "per-tensor"),
                     ("powersgd-warm-up", "adam", "per-tensor")]


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case,inner,cap", COMPRESSED_COMBOS)
def test_compressed_overlap_equals_the_blocking_step(comm, case: str, inner: str,
                                                     cap: str) -> None:
    make = _compressed_cases()[case]
    ref, _, ref_opt = _run(comm, make, inner, overlap=False)
    X, sent, opt = _sent_run(comm, make, inner, overlap=True, cap=CAPS[cap])
    lead = next(b for b, bk in enumerate(opt.buckets.buckets) if {4, 5} & set(bk.params))
    b, rb = opt.bytes, ref_opt.bytes
    got = comm.allgather((bool(np.array_equal(X, ref)), sent, X[-1].tobytes(),
                          (b.up, b.down, b.control) == (rb.up, rb.down, rb.control)))
    assert all(g[0] for g in got), case
    # step 0 is the algorithm's init (no state to compress against): sent at step();
    # then backward compresses and sends every bucket before the one holding ``spare``
    # (PowerSGD's dense warm-up steps are not overlapped: the first compressed one is t = 2)
    first = 2 if case == "powersgd-warm-up" else 1
    assert all(g[1] == [0] * first + [lead] * (STEPS - first) for g in got), \
        [g[1] for g in got]
    assert len({g[2] for g in got}) == 1
    assert all(g[3] for g in got)  # the blocking step's byte counts


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", ["ef21-topk", "powersgd-r4"])
def test_compressed_overlap_accumulates_with_no_sync_and_refuses_without(comm,
                                                                        case: str) -> None:
    from decomp.errors import ConfigError

    make = _compressed_cases()[case]
    ref, _, _ = _run(comm, make, "own", overlap=False, micro=3, no_sync=False)
    X, _, _ = _run(comm, make, "own", overlap=True, cap=1e-6, micro=3)
    try:
        _run(comm, make, "own", overlap=True, cap=1e-6, micro=2, no_sync=False)
        err = ""
    except ConfigError as e:
        err = str(e)
    got = comm.allgather((bool(np.array_equal(X, ref)), err))
    assert all(g[0] for g in got)
    assert all("no_sync()" in g[1] for g in got)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case,find_unused", [("ef21-topk", True), ("powersgd-r1", False)])
def test_compressed_overlap_with_parameters_without_gradients(comm, case: str,
                                                              find_unused: bool) -> None:
    make = _compressed_cases()[case]
    kw = {"find_unused_parameters": find_unused}
    for extra in (lambda rank, t: rank == 0, lambda rank, t: t % 2 == 1):
        ref, _, _ = _run(comm, make, "adam", overlap=False, extra=extra, **kw)
        X, _, _ = _run(comm, make, "adam", overlap=True, cap=1e-6, extra=extra, **kw)
        assert all(comm.allgather(bool(np.array_equal(X, ref))))


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", ["ef21-topk", "powersgd-r4"])
def test_compressed_overlap_checkpoint_continues_blocking(comm, case: str) -> None:
    """The state is the algorithm's: saved from an overlapped run after 2 steps and loaded
    into a blocking one, the next steps are the uninterrupted overlapped run's."""
    make = _compressed_cases()[case]
    full, _, _ = _run(comm, make, "adam", overlap=True, cap=1e-6)
    half = STEPS // 2
    X, _, opt = _run(comm, make, "adam", overlap=True, cap=1e-6, steps=half)
    saved, params = opt.state_dict(), opt.model.state_dict()
    Y, _, _ = _run(comm, make, "adam", overlap=False, resume=(saved, params), first=half,
                   steps=STEPS - half)
    got = np.concatenate([X, Y])
    assert all(comm.allgather(bool(np.array_equal(got, full))))


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", ["ef21-topk", "powersgd-r4"])
def test_trainer_compressed_overlap_equals_blocking(comm, case: str) -> None:
    from decomp.data.classification import load
    from decomp.torch.trainer import Trainer

    make = _compressed_cases()[case]
    ds = load("synthetic", n_samples=300, n_features=10, n_classes=3)
    xs, hists = [], []
    for overlap in (False, True):
        opts = {"overlap": True, "bucket_cap_mb": 1e-6} if overlap else {}
        tr = Trainer(Net(), nn.CrossEntropyLoss(), ds, algorithm=make(lr=LR), comm=comm,
                     seed=3, batch_size=8, verbose=False, progress=False, aggregation="gather",
                     **opts)
        hists.append([(h["step"], h["loss"], h["test_acc"]) for h in tr.fit(6, eval_every=3)])
        xs.append(tr.x.copy())
    got = comm.allgather((bool(np.array_equal(xs[0], xs[1])), hists[0] == hists[1]))
    assert all(g[0] and g[1] for g in got)
