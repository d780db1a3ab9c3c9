"""FlatModel views and TorchProblem oracles (single process)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse as sp
import torch  # (pinned dependency: missing = a broken install, not a skip)
from torch import nn  # noqa: E402

from decomp.errors import ConfigError  # noqa: E402
from decomp.torch import FlatModel, TorchProblem, is_buffer, make_torch_problems  # noqa: E402


def _net(bn: bool = False, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(6, 8)]
    if bn:
        layers.append(nn.BatchNorm1d(8))
    layers += [nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(8, 3))
    return nn.Sequential(*layers)


def _data(n: int = 40):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _concat_grads(m: nn.Module) -> np.ndarray:
    return np.concatenate([p.grad.detach().numpy().ravel() for p in m.parameters()])


def test_parameters_and_gradients_are_views_of_the_flat_buffers() -> None:
    m = _net(bn=True)
    ref = copy.deepcopy(m)
    flat = FlatModel(m)
    assert flat.d == sum(p.numel() for p in m.parameters())
    # same values as before, in named_parameters order
    np.testing.assert_array_equal(
        flat.params, np.concatenate([p.detach().numpy().ravel() for p in ref.parameters()]))
    for p in m.parameters():
        assert np.shares_memory(flat.params, p.detach().numpy())
        assert np.shares_memory(flat.grads, p.grad.numpy())
    base_p, base_g = flat.params.ctypes.data, flat.grads.ctypes.data
    for p, s in zip(m.parameters(), flat.slots, strict=True):
        assert p.data_ptr() == base_p + 4 * s.offset
        assert p.grad.data_ptr() == base_g + 4 * s.offset
    # BatchNorm statistics live in the buffer vector
    for name, b in m.named_buffers():
        if b.is_floating_point():
            assert np.shares_memory(flat.buffers, b.numpy()), name
    assert flat.buffers.size == 16


def test_backward_fills_the_flat_gradient_and_equals_concatenated_grads() -> None:
    m = _net()
    ref = copy.deepcopy(m)
    flat = FlatModel(m)
    X, y = _data()
    nn.CrossEntropyLoss()(m(X), y).backward()
    nn.CrossEntropyLoss()(ref(X), y).backward()
    np.testing.assert_array_equal(flat.grads, _concat_grads(m))
    np.testing.assert_array_equal(flat.grads, _concat_grads(ref))


def test_an_optimizer_step_through_the_flat_buffer_changes_the_module_identically() -> None:
    m = _net()
    ref = copy.deepcopy(m)
    flat = FlatModel(m)
    X, y = _data()
    nn.CrossEntropyLoss()(m(X), y).backward()
    flat.params -= np.float32(0.1) * flat.grads  # a step on the vector
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    nn.CrossEntropyLoss()(ref(X), y).backward()
    opt.step()
    # numpy's x - lr*g and torch's SGD are different arithmetic paths (torch may fuse the
    # multiply-add), so equal to a couple of ulps, not bit for bit
    for p, q in zip(m.parameters(), ref.parameters(), strict=True):
        np.testing.assert_array_max_ulp(p.detach().numpy(), q.detach().numpy(), maxulp=2)
    # and a torch optimizer acting on the module moves the flat vector
    before = flat.params.copy()
    torch.optim.SGD(m.parameters(), lr=0.5).step()
    np.testing.assert_allclose(flat.params, before - np.float32(0.5) * flat.grads, rtol=1e-6)
    torch.testing.assert_close(m(X), torch.from_numpy(_forward_ref(ref, flat, X)))


def _forward_ref(ref: nn.Module, flat: FlatModel, X):
    with torch.no_grad():
        for q, s in zip(ref.parameters(), flat.slots, strict=True):
            q.copy_(torch.from_numpy(flat.params[s.offset:s.offset + s.size].reshape(s.shape)))
        return ref(X).detach().numpy()


def test_bind_makes_an_external_vector_the_parameters_without_a_copy() -> None:
    m = _net()
    flat = FlatModel(m)
    x = flat.params.copy()
    flat.bind(x)
    assert flat.params is x and is_buffer(x, flat.params)
    for p in m.parameters():
        assert np.shares_memory(x, p.detach().numpy())
    X, _ = _data()
    out0 = m(X).detach().clone()
    x *= 2  # in-place update of x is an update of the module
    assert not torch.allclose(m(X), out0)
    flat.load(x)  # no-op: x is the buffer
    with pytest.raises(ValueError, match="float32"):
        flat.bind(x.astype(np.float64))


def test_check_grads_reattaches_after_zero_grad_set_to_none() -> None:
    m = _net()
    flat = FlatModel(m)
    X, y = _data()
    m.zero_grad()  # torch's default set_to_none=True detaches .grad from the buffer
    nn.CrossEntropyLoss()(m(X), y).backward()
    flat.check_grads()
    for p in m.parameters():
        assert np.shares_memory(flat.grads, p.grad.numpy())
    np.testing.assert_array_equal(flat.grads, _concat_grads(m))


def test_non_float32_models_are_refused() -> None:
    with pytest.raises(ConfigError, match="float32"):
        FlatModel(nn.Linear(3, 2).double())


def test_problem_gradients_match_plain_torch() -> None:
    X, y = _data(50)
    m = _net()
    ref = copy.deepcopy(m)
    prob = TorchProblem(FlatModel(m), nn.CrossEntropyLoss(), X, y, chunk=7)
    x = prob.flat.params.copy() + 0.01
    with torch.no_grad():
        for q, s in zip(ref.parameters(), prob.flat.slots, strict=True):
            q.copy_(torch.from_numpy(x[s.offset:s.offset + s.size].reshape(s.shape)))
    g = prob.grad(x)
    assert g is prob.flat.grads  # the buffer itself: no copy
    nn.CrossEntropyLoss()(ref(X), y).backward()
    np.testing.assert_allclose(g, _concat_grads(ref), rtol=2e-5, atol=1e-6)  # chunked sum
    rows = np.array([3, 7, 11, 20])
    ref.zero_grad()
    lb = nn.CrossEntropyLoss()(ref(X[rows]), y[rows])
    lb.backward()
    gb = prob.minibatch_grad(x, rows)
    np.testing.assert_allclose(gb, _concat_grads(ref), rtol=1e-6, atol=1e-7)
    assert prob.last_loss == pytest.approx(float(lb.detach()), rel=1e-6)
    with torch.no_grad():
        assert prob.loss(x) == pytest.approx(float(nn.CrossEntropyLoss()(ref(X), y)), rel=1e-5)
    assert prob.d == prob.flat.d and prob.n_samples == 50


def test_weight_decay_adds_wd_x_and_copy_grad_returns_fresh_arrays() -> None:
    X, y = _data()
    p0 = TorchProblem(FlatModel(_net()), nn.CrossEntropyLoss(), X, y)
    p1 = TorchProblem(FlatModel(_net()), nn.CrossEntropyLoss(), X, y, weight_decay=0.1,
                      copy_grad=True)
    x = p0.flat.params.copy()
    g0 = p0.grad(x).copy()
    g1 = p1.grad(x)
    assert g1 is not p1.flat.grads
    np.testing.assert_allclose(g1, g0 + np.float32(0.1) * x, rtol=1e-6, atol=1e-7)
    assert p1.loss(x) == pytest.approx(p0.loss(x) + 0.05 * float(x @ x), rel=1e-6)


def test_dropout_randomness_replays_from_seed_worker_and_rows() -> None:
    X, y = _data()
    rows = np.arange(10)
    a = TorchProblem(FlatModel(_net(dropout=0.5)), nn.CrossEntropyLoss(), X, y, seed=3)
    b = TorchProblem(FlatModel(_net(dropout=0.5)), nn.CrossEntropyLoss(), X, y, seed=3)
    x = a.flat.params.copy()
    ga = a.minibatch_grad(x, rows).copy()
    torch.manual_seed(12345)  # unrelated global RNG use does not matter
    np.testing.assert_array_equal(ga, b.minibatch_grad(x, rows))
    c = TorchProblem(FlatModel(_net(dropout=0.5)), nn.CrossEntropyLoss(), X, y, seed=3,
                     worker=1)
    assert not np.array_equal(ga, c.minibatch_grad(x, rows))


def test_sparse_features_are_densified_per_batch() -> None:
    X, y = _data()
    Xs = sp.csr_matrix(X.numpy())
    pd = TorchProblem(FlatModel(_net()), nn.CrossEntropyLoss(), X.numpy(), y.numpy())
    ps = TorchProblem(FlatModel(_net()), nn.CrossEntropyLoss(), Xs, y.numpy())
    x = pd.flat.params.copy()
    np.testing.assert_allclose(ps.grad(x), pd.grad(x), rtol=1e-6)
    np.testing.assert_allclose(ps.minibatch_grad(x, np.array([1, 5])),
                               pd.minibatch_grad(x, np.array([1, 5])), rtol=1e-6)


def test_smoothness_asks_for_an_explicit_lr_and_bad_losses_are_refused() -> None:
    X, y = _data()
    prob = TorchProblem(FlatModel(_net()), nn.CrossEntropyLoss(), X, y)
    with pytest.raises(ConfigError, match="explicit lr"):
        prob.smoothness()
    with pytest.raises(ConfigError, match="reduction"):
        TorchProblem(FlatModel(_net()), nn.CrossEntropyLoss(reduction="sum"), X, y)


def test_make_torch_problems_gives_independent_copies_with_the_same_start() -> None:
    X, y = _data(30)
    parts = [np.arange(0, 10), np.arange(10, 30)]
    probs = make_torch_problems(_net(), nn.CrossEntropyLoss(), X.numpy(), y.numpy(), parts)
    assert [p.n_samples for p in probs] == [10, 20] and [p.worker for p in probs] == [0, 1]
    np.testing.assert_array_equal(probs[0].flat.params, probs[1].flat.params)
    assert not np.shares_memory(probs[0].flat.params, probs[1].flat.params)
