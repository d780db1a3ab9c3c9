"""The hot paths: fused kernels equal their numpy expressions bit for bit, the master's downlink
sum round-trips, and a step of each family allocates no full-size temporary (tracemalloc)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from mpi4py import MPI

from decomp.algorithms import CHOCOSGD, DCGD, DPSGD, EF, EF21, EF21SGDM, GD, SGDM, Env
from decomp.comm import MasterWorker, Neighborhood
from decomp.compress import QSGD, RandK, Scaled, TopK
from decomp.compress.aggregate import SumDecoder, SumEncoder, index_bits
from decomp.errors import PayloadError
from decomp.kernels import fused as F
from decomp.problems import Problem
from decomp.topologies import MixingMatrix


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_kernels_are_the_numpy_expressions(dtype: type) -> None:
    rng = np.random.default_rng(0)
    d, t = 10_001, np.dtype(dtype).type
    x, g, s, m = (rng.standard_normal(d).astype(dtype) for _ in range(4))
    lr, n, beta = 0.037, 3, 0.9
    y = x.copy()
    assert F.descend(y, t(lr), g) and np.array_equal(y, x - lr * g)
    y = x.copy()
    assert F.descend_mean(y, t(lr), g, t(n)) and np.array_equal(y, x - lr * (g / n))
    y = x.copy()
    assert F.axpy(y, t(lr), s) and np.array_equal(y, x + lr * s)
    y = x.copy()
    assert F.apply_dense(y, s, t(-1.0), t(n)) and np.array_equal(y, x + -1.0 * (s / n))
    y = x.copy()
    F.scale_add(y, t(1 - beta), t(beta), g)
    assert np.array_equal(y, x * (1 - beta) + beta * g)
    for nesterov in (False, True):
        y, mm, gg = x.copy(), m.copy(), g.copy()
        assert F.momentum(y, mm, gg, t(n), t(beta), t(lr), nesterov)
        gbar = g / n
        m2 = beta * m + gbar
        assert np.array_equal(mm, m2)
        assert np.array_equal(y, x - lr * (gbar + beta * m2 if nesterov else m2))
    rest = rng.standard_normal((3, d)).astype(dtype)
    w = np.array([0.2, 0.3, 0.1], dtype=dtype)
    out = np.empty_like(x)
    assert F.gossip_mix(out, x, rest, t(0.4), w, t(lr), g)
    want = x * 0.4
    for k in range(3):
        want = want + rest[k] * float(w[k])
    assert np.array_equal(out, want - lr * g)
    y = x.copy()
    assert F.gossip_mix(y, y, rest, t(0.4), w, t(lr), g) and np.array_equal(y, out)  # in place
    y = x.copy()
    y[77] = np.inf
    assert not F.descend(y, t(lr), g) and not F.all_finite(y) and F.all_finite(x)
    y[77] = np.nan
    assert not F.axpy(y, t(lr), s)


def _payloads(C, n: int, d: int, dtype: type, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [C.encode(rng.standard_normal(d).astype(dtype), (seed, i, 1)) for i in range(n)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C,n,d,dense", [(TopK(50), 4, 5000, False), (RandK(40), 3, 4000, False),
                                        (TopK(60), 4, 100, True), (Scaled(QSGD(4)), 3, 700, True)])
def test_downlink_sum_equals_the_dense_sum(C, n: int, d: int, dense: bool, dtype: type) -> None:
    payloads = _payloads(C, n, d, dtype)
    enc = SumEncoder(d, dtype)
    down = enc.encode(C, payloads)
    s = np.zeros(d, dtype=dtype)
    for p in payloads:
        C.decode_add(p, s)
    g0 = np.random.default_rng(5).standard_normal(d).astype(dtype)
    g = g0.copy()
    assert SumDecoder(n).apply(down, g, 1.0)
    assert np.array_equal(g, g0 + s / n)
    x = g0.copy()
    SumDecoder(n).apply(down, x, -0.25)
    assert np.array_equal(x, g0 - np.dtype(dtype).type(0.25) * (s / n))
    assert (down[3] == 0) == dense  # flags: 0 = dense, else the index width
    if not dense:
        u = int(np.count_nonzero(s))  # union size (no exact cancellations here)
        isz = np.dtype(dtype).itemsize
        assert down.size == 16 + u * isz + (u * index_bits(d) + 7) // 8
    # the buffers are clean for the next step: the same sum again
    assert np.array_equal(enc.encode(C, payloads), down)


def test_downlink_sum_poison_and_corruption() -> None:
    C, d = TopK(5), 300
    payloads = _payloads(C, 3, d, np.float64)
    enc = SumEncoder(d, np.float64)
    g = np.zeros(d)
    SumDecoder(3).apply(enc.encode(C, [payloads[0], np.zeros(payloads[1].size, np.uint8),
                                       payloads[2]]), g, 1.0)
    assert np.isnan(g).all()
    down = enc.encode(C, payloads).copy()
    with pytest.raises(PayloadError):
        SumDecoder(3).apply(down[:-1], np.zeros(d), 1.0)
    with pytest.raises(PayloadError):
        SumDecoder(3).apply(down, np.zeros(d + 1), 1.0)
    bad = payloads[1].copy()
    C._sections(bad, d)[1][0] = 65_000  # an index beyond d
    with pytest.raises(PayloadError):
        enc.encode(C, [payloads[0], bad])
    assert np.array_equal(enc.encode(C, payloads), down)  # no residue from the refused call


class BufferProblem(Problem):
    """A quadratic whose gradient is written into one buffer (like a torch model's)."""

    def __init__(self, d: int) -> None:
        super().__init__(np.zeros((1, d)), np.zeros(1))
        self.buf = np.zeros(d)
        self.target = np.linspace(-1.0, 1.0, d)

    def loss(self, x: np.ndarray) -> float:
        return 0.0

    def _grad_rows(self, x: np.ndarray, A: np.ndarray, b: np.ndarray) -> np.ndarray:
        np.subtract(x, self.target, out=self.buf)
        return self.buf

    def smoothness(self) -> float:
        return 1.0


D = 400_000  # 3.2 MB per float64 vector


def _largest_allocation(step, warm: int = 2) -> int:
    for _ in range(warm):
        step()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        step()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("make", [
    lambda: EF21(TopK(ratio=0.01)), lambda: EF21SGDM(TopK(ratio=0.01)),
    lambda: EF(TopK(ratio=0.01)), lambda: DCGD(RandK(ratio=0.01)), lambda: GD(),
    lambda: SGDM()], ids=["ef21", "ef21_sgdm", "ef", "dcgd", "gd", "sgdm"])
def test_a_master_worker_step_allocates_no_full_size_vector(make) -> None:
    alg = make()
    env = Env(MasterWorker(MPI.COMM_SELF), BufferProblem(D), 1, 0, 0.1)
    box = [alg.init(env, np.ones(D))]

    def step() -> None:
        box[0] = alg.step(env, box[0])

    peak = _largest_allocation(step)
    assert peak < D * 8 // 4, f"{peak} bytes allocated in one step (d = {D})"


@pytest.mark.parametrize("make", [lambda: CHOCOSGD(TopK(ratio=0.01), consensus_step=0.5),
                                  lambda: DPSGD()], ids=["choco", "dpsgd"])
def test_a_decentralized_step_allocates_no_full_size_vector(make) -> None:
    alg = make()
    nb = Neighborhood(MixingMatrix(np.ones((1, 1))), MPI.COMM_SELF)
    env = Env(nb, BufferProblem(D), 1, 0, 0.1)
    box = [alg.init(env, np.ones(D))]

    def step() -> None:
        box[0] = alg.step(env, box[0])

    try:
        peak = _largest_allocation(step)
    finally:
        nb.close()
    assert peak < D * 8 // 4, f"{peak} bytes allocated in one step (d = {D})"


def test_merge_sum_and_union_add_agree() -> None:
    rng = np.random.default_rng(3)
    d, n, k = 1000, 4, 60
    lists = [np.sort(rng.choice(d, k, replace=False)).astype(np.uint32) for _ in range(n)]
    vals = [rng.standard_normal(k) for _ in range(n)]
    starts = np.arange(0, (n + 1) * k, k, dtype=np.int64)
    union, sums = np.empty(n * k, np.uint32), np.empty(n * k)
    c = F.merge_sum(np.concatenate(lists), np.concatenate(vals), starts, union, sums)
    dense = np.zeros(d)
    for i in range(n):
        dense[lists[i]] += vals[i]  # in list order, as the dense sum does
    assert np.all(np.diff(union[:c].astype(np.int64)) > 0)
    assert np.array_equal(union[:c], np.unique(np.concatenate(lists)))
    assert np.array_equal(sums[:c], dense[union[:c]])
    acc, mark, u2, s2 = np.zeros(d), np.zeros(d, np.uint8), np.empty(n * k, np.uint32), \
        np.empty(n * k)
    c2 = 0
    for i in range(n):  # the fallback for lists that are not ascending: same union and sums
        perm = rng.permutation(k)
        c2 = F.union_add(vals[i][perm], lists[i][perm], acc, mark, u2, c2)
    F.take_union(acc, mark, u2, c2, s2)
    order = np.argsort(u2[:c2])
    assert c2 == c and np.array_equal(u2[:c2][order], union[:c])
    assert np.array_equal(s2[:c2][order], sums[:c]) and not acc.any() and not mark.any()
    shuffled = np.concatenate([lists[0][::-1], *lists[1:]])
    assert F.merge_sum(shuffled, np.concatenate(vals), starts, union, sums) == -1
