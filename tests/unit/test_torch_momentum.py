"""EF21-SGDM and SGDM references: special cases, torch.optim's convention, options."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from decomp.algorithms.ef21_sgdm import EF21SGDM
from decomp.algorithms.sgdm import SGDM
from decomp.compress import TopK
from decomp.data import load_dataset
from decomp.errors import ConfigError
from decomp.problems import initial_point, split_problem
from decomp.sim import reference, simulate


def _logistic(n: int = 3):
    ds = load_dataset("breast_cancer", scale="standard")
    probs = split_problem(ds, "logistic", n)
    return probs, initial_point("normal", ds.n_features, seed=4)


def test_ef21_sgdm_with_eta_1_is_ef21_sgd() -> None:
    probs, x0 = _logistic()
    for init in ("compressed", "full"):
        a = reference(EF21SGDM(TopK(2), eta=1.0, init=init, batch_size=16), probs, x0,
                      lr=0.3, steps=30, seed=2)
        b = simulate("ef21_sgd", probs, x0, lr=0.3, steps=30, seed=2, compressor=TopK(2),
                     init=init, batch_size=16)
        np.testing.assert_array_equal(a.xs, b.xs)
        np.testing.assert_array_equal(a.bytes_up, b.bytes_up)


def test_ef21_sgdm_momentum_is_the_ema_of_stochastic_gradients_without_compression() -> None:
    """With C = identity, g_i = v_i, so x moves along the mean EMA (1/n) Σ v_i."""
    from decomp.compress import Identity
    from decomp.problems import oracle_grad

    probs, x0 = _logistic(2)
    eta, lr, T = 0.2, 0.1, 10
    tr = reference(EF21SGDM(Identity(), eta=eta, batch_size=8), probs, x0, lr=lr, steps=T,
                   seed=1)
    V = np.stack([p.grad(x0) for p in probs])
    x = x0.copy()
    for t in range(1, T + 1):
        x = x - lr * V.mean(axis=0)
        V = (1 - eta) * V + eta * np.stack(
            [oracle_grad(p, x, seed=1, worker=i, step=t, batch_size=8)
             for i, p in enumerate(probs)])
        np.testing.assert_allclose(tr.xs[t], x, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tr.state["V"], V, rtol=1e-12, atol=1e-14)


def test_sgdm_with_zero_momentum_is_sgd() -> None:
    probs, x0 = _logistic()
    a = reference(SGDM(momentum=0.0, batch_size=10), probs, x0, lr=0.2, steps=20, seed=3)
    b = simulate("sgd", probs, x0, lr=0.2, steps=20, seed=3, batch_size=10)
    np.testing.assert_allclose(a.xs, b.xs, rtol=1e-12)
    np.testing.assert_array_equal(a.bytes_up, b.bytes_up)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgdm_follows_torch_optim_sgd(nesterov: bool) -> None:
    import torch
    from torch import nn

    from decomp.torch import FlatModel, TorchProblem

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(30, 5, generator=g), torch.randint(0, 2, (30,), generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    ref = copy.deepcopy(net)
    prob = TorchProblem(FlatModel(net), nn.CrossEntropyLoss(), X, y)
    x0 = prob.flat.params.copy()
    tr = reference(SGDM(momentum=0.9, nesterov=nesterov), [prob], x0, lr=0.1, steps=5)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, nesterov=nesterov)
    for _ in range(5):
        opt.zero_grad()
        nn.CrossEntropyLoss()(ref(X), y).backward()
        opt.step()
    final = np.concatenate([p.detach().numpy().ravel() for p in ref.parameters()])
    np.testing.assert_allclose(tr.xs[-1], final, rtol=1e-5, atol=1e-6)


def test_option_checks() -> None:
    with pytest.raises(ConfigError, match="eta"):
        EF21SGDM(TopK(1), eta=0.0)
    with pytest.raises(ConfigError, match="momentum"):
        SGDM(momentum=1.0)
    with pytest.raises(ConfigError, match="lr"):
        SGDM(lr=-1.0)
    with pytest.raises(ConfigError, match="init"):
        EF21SGDM(TopK(1), init="zero")
    probs, x0 = _logistic()
    with pytest.raises(ConfigError, match="eta"):
        simulate("ef21_sgdm", probs, x0, lr=0.1, steps=1, batch_size=4, eta=1.5)
    assert EF21SGDM(TopK(1), lr=0.5).lr == 0.5 and EF21SGDM(TopK(1)).init_mode == "full"
