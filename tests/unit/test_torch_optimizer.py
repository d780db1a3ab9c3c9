"""decomp.torch.DistributedOptimizer on one process (MPI.COMM_SELF): the torch optimizer
protocol (schedulers, closures, clipping after synchronize, autocast), gradient buffers, the
unused-parameter rule and every refusal. Multi-rank equality with decomp.sim, resume and
consistency across ranks: tests/mpi/test_torch_optimizer.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from decomp.algorithms import CHOCOSGD, EF, EF21, GD, EF21Plus, PowerSGD
from decomp.compress import TopK
from decomp.errors import ConfigError
from decomp.torch import DistributedOptimizer


@pytest.fixture(scope="module")
def comm():
    from mpi4py import MPI

    return MPI.COMM_SELF


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)


def _backward(model: nn.Module, seed: int = 0) -> torch.Tensor:
    x, y = _batch(seed)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss


def test_an_lr_scheduler_drives_the_algorithms_own_step(comm) -> None:
    model = _net()
    opt = DistributedOptimizer(None, model, GD(lr=0.1), comm=comm)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x = opt.flat.params.copy()
    for k, lr in enumerate([0.1, 0.05, 0.025]):
        opt.zero_grad()
        _backward(model, k)
        g = opt.flat.grads.copy()
        opt.step()
        sched.step()
        x = x - np.float32(lr) * (g / np.float32(1))  # GD on one worker: x − γ (g / n)
        assert np.array_equal(opt.flat.params, x)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0125)


def test_clipping_after_synchronize_acts_on_the_aggregated_gradient(comm) -> None:
    model = _net()
    opt = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.5), model,
                               EF(TopK(ratio=0.3)), comm=comm)
    opt.zero_grad()
    _backward(model)
    local = opt.flat.grads.copy()
    opt.synchronize()
    ghat = opt.flat.grads.copy()
    assert not np.array_equal(ghat, local)
    assert np.count_nonzero(ghat) <= int(np.ceil(0.3 * ghat.size))
    norm = nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
    assert float(norm) == pytest.approx(float(np.linalg.norm(ghat)), rel=1e-5)
    x0 = opt.flat.params.copy()
    opt.step()
    assert np.linalg.norm(opt.flat.params - x0) == pytest.approx(0.5e-3, rel=1e-3)
    with pytest.raises(ConfigError, match="twice"):
        opt.synchronize()
        opt.synchronize()


def test_closure_autocast_and_in_place_gradients(comm) -> None:
    model = _net()
    opt = DistributedOptimizer(torch.optim.Adam(model.parameters(), lr=1e-2), model,
                               EF21(TopK(ratio=0.5)), comm=comm)
    x, y = _batch()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    losses = [float(opt.step(closure).detach()) for _ in range(30)]
    assert losses[-1] < losses[0]
    base = opt.flat.grads.__array_interface__["data"][0]
    end = base + opt.flat.grads.nbytes
    for p in model.parameters():  # .grad still views of the flat buffer: backward in place
        assert base <= p.grad.data_ptr() < end


def test_unused_parameters_are_skipped_only_with_find_unused(comm) -> None:
    for find in (False, True):
        model = _net()
        extra = nn.Linear(2, 2)
        model.add_module("extra", extra)  # never used in forward
        w0 = extra.weight.detach().clone()
        opt = DistributedOptimizer(torch.optim.AdamW(model.parameters(), lr=0.1), model,
                                   EF21(TopK(ratio=0.5)), comm=comm,
                                   find_unused_parameters=find)
        for k in range(3):
            opt.zero_grad()
            x, y = _batch(k)
            nn.functional.cross_entropy(model[2](model[1](model[0](x))), y).backward()
            opt.step()
        assert (extra.weight.grad is None) == find
        assert torch.equal(extra.weight, w0) == find  # AdamW's decay moves it otherwise
        assert opt.bytes.control == (3 * 6 * 4 if find else 0)  # the 6-tensor int32 mask


def test_a_decentralized_node_with_adam_and_its_average(comm) -> None:
    model = _net()
    opt = DistributedOptimizer(torch.optim.Adam(model.parameters(), lr=1e-2), model,
                               CHOCOSGD(TopK(ratio=0.3), consensus_step=0.5), comm=comm)
    losses = []
    for k in range(20):
        opt.zero_grad()
        losses.append(float(_backward(model, k % 2).detach()))
        opt.step()
    assert losses[-1] < losses[0]
    x = opt.flat.params.copy()
    with opt.averaged() as m:  # one node: x̄ = x
        assert m is model and np.array_equal(opt.flat.params, x)
    assert np.array_equal(opt.flat.params, x)
    assert set(opt.traffic()) == {"sent", "received", "control"}
    assert "ring" in repr(opt)


@pytest.mark.parametrize("case,match", [
    ("batch", "batch_size"), ("ef21plus", "EF21Plus"), ("downlink", "downlink"),
    ("lr-with-torch", "lr= is for optimizer=None"), ("no-lr", "positive lr"),
    ("topology", "decentralized family"), ("foreign", "not a trainable parameter"),
    ("double", "already"), ("sync-own", "synchronize"), ("not-optimizer", "torch.optim"),
    ("check-every", "check_every")])
def test_refusals(comm, case: str, match: str) -> None:
    model = _net()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=match):
        if case == "batch":
            DistributedOptimizer(sgd, model, EF21(TopK(ratio=0.1), batch_size=8), comm=comm)
        elif case == "ef21plus":
            DistributedOptimizer(sgd, model, EF21Plus(TopK(ratio=0.1)), comm=comm)
        elif case == "downlink":
            DistributedOptimizer(sgd, model, EF21(TopK(ratio=0.1), downlink="model"),
                                 comm=comm)
        elif case == "lr-with-torch":
            DistributedOptimizer(sgd, model, GD(), lr=0.1, comm=comm)
        elif case == "no-lr":
            DistributedOptimizer(None, model, GD(), comm=comm)
        elif case == "topology":
            DistributedOptimizer(sgd, model, GD(), topology="ring", comm=comm)
        elif case == "foreign":
            other = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
            DistributedOptimizer(other, model, GD(), comm=comm)
        elif case == "double":
            DistributedOptimizer(DistributedOptimizer(sgd, model, GD(), comm=comm), model,
                                 GD(), comm=comm)
        elif case == "sync-own":
            DistributedOptimizer(None, model, GD(lr=0.1), comm=comm).synchronize()
        elif case == "not-optimizer":
            DistributedOptimizer(object(), model, GD(), comm=comm)  # type: ignore[arg-type]
        else:
            DistributedOptimizer(sgd, model, GD(), comm=comm, check_every=0)


@pytest.mark.parametrize("case", ["ef21-sgd", "ef-adam", "gd-own", "choco-sgdm", "dpsgd-own",
                                  "powersgd-adam"])
def test_a_step_allocates_no_full_size_numpy_array(comm, case: str) -> None:
    """tracemalloc sees numpy's allocations (torch's own tensors are not traced): none of
    d·4/4 bytes or more inside step() once warm, as tests/unit/test_hot_path.py bounds the
    algorithms' steps (the ones that bound covers: DCD-PSGD with QSGD allocates about 3·d
    bytes per step in the engine itself)."""
    import tracemalloc

    from decomp.algorithms import DPSGD

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 64))  # d ≈ 132k
    make = {"ef21-sgd": (lambda: EF21(TopK(ratio=0.01)), "sgd"),
            "ef-adam": (lambda: EF(TopK(ratio=0.01)), "adam"),
            "gd-own": (lambda: GD(lr=0.01), None),
            "choco-sgdm": (lambda: CHOCOSGD(TopK(ratio=0.01), consensus_step=0.5), "sgdm"),
            "dpsgd-own": (lambda: DPSGD(lr=0.01), None),
            "powersgd-adam": (lambda: PowerSGD(rank=4), "adam")}[case]
    inner = {"sgd": lambda: torch.optim.SGD(model.parameters(), lr=0.01),
             "adam": lambda: torch.optim.Adam(model.parameters(), lr=1e-3),
             "sgdm": lambda: torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
             None: lambda: None}[make[1]]()
    opt = DistributedOptimizer(inner, model, make[0](), comm=comm)
    x = torch.randn(8, 64)

    def one() -> None:
        opt.zero_grad()
        model(x).square().mean().backward()

    for _ in range(3):  # warm: kernels compiled, workspace and optimizer state made
        one()
        opt.step()
    one()
    tracemalloc.start()
    try:
        opt.step()
        snap = tracemalloc.take_snapshot()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bound = opt.flat.d * 4 // 4
    biggest = max((s.size for s in snap.statistics("lineno")), default=0)
    assert peak < bound and biggest < bound, (peak, biggest, bound)
