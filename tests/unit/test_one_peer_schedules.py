"""The one-peer schedules against their definition, built here independently of
topologies/schedule.py: W_t for every step (also past the first period), the period, the peers
of a period, the refusals of a bad step or node count, and StaticSchedule as its one W.
Written for gaps mutation testing found (docs/testing.md, "Mutation testing")."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.sparse as sp

from decomp.topologies import (
    MixingMatrix,
    OnePeerExponential,
    StaticSchedule,
    TopologyError,
    metropolis_hastings,
    one_peer_exponential,
    one_peer_hypercube,
    ring,
)
from decomp.topologies.schedule import is_schedule, one_peer_period


def period_of(n: int) -> int:
    """tau = ceil(log2 n), and 1 for n <= 2 (one shift, 2^0 = 1)."""
    return 1 if n <= 2 else math.ceil(math.log2(n))


def expected(n: int, t: int, pair) -> np.ndarray:
    """W_t[i, i] = W_t[i, pair(i, s_t)] = 1/2 with s_t = 2^(t mod tau) (a full 1 for n = 1)."""
    w = np.zeros((n, n))
    s = 2 ** (t % period_of(n))
    for i in range(n):
        w[i, i] += 0.5
        w[i, pair(i, s) % n] += 0.5
    return w


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 12, 16])
def test_one_peer_exponential_is_its_definition_at_every_step(n: int) -> None:
    """W_t[i, i] = W_t[i, (i + 2^(t mod tau)) mod n] = 1/2 for t over three periods, from the
    function and the schedule object alike; symmetric exactly when 2 s_t = n (or n = 1)."""
    sched = OnePeerExponential(n)
    assert sched.period == period_of(n) == one_peer_period(n)
    for t in range(3 * period_of(n) + 1):
        want = expected(n, t, lambda i, s: i + s)
        for w in (one_peer_exponential(n, t), sched(t), sched(np.int64(t))):
            np.testing.assert_array_equal(w.dense(), want)
        s = 2 ** (t % sched.period)
        assert one_peer_exponential(n, t).symmetric == (n == 1 or 2 * s == n)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
def test_one_peer_hypercube_is_its_definition_at_every_step(n: int) -> None:
    """W_t[i, i] = W_t[i, i XOR 2^(t mod tau)] = 1/2 for t over three periods; symmetric."""
    sched = OnePeerExponential(n, symmetric=True)
    assert sched.period == period_of(n)
    for t in range(3 * period_of(n) + 1):
        want = expected(n, t, lambda i, s: i ^ s)
        for w in (one_peer_hypercube(n, t), sched(t)):
            np.testing.assert_array_equal(w.dense(), want)
            assert w.symmetric


@pytest.mark.parametrize("bad", [-1, -8, True, False, 1.0, 2.5, "1", None])
def test_a_schedule_refuses_a_step_that_is_not_a_non_negative_integer(bad: object) -> None:
    """t must be an int (or numpy integer) >= 0: a negative, bool, float or string step is
    refused with the value named, by both schedules and the schedule object."""
    for call in (lambda: one_peer_exponential(4, bad), lambda: one_peer_hypercube(4, bad),
                 lambda: OnePeerExponential(4)(bad)):
        with pytest.raises(TopologyError, match="non-negative integer"):
            call()


def test_a_schedule_refuses_no_nodes_and_a_hypercube_of_other_than_a_power_of_two() -> None:
    """n >= 1 for either schedule (the period is undefined below), n a power of two for the
    hypercube (a refusal that says so, also for n < 1); the one-peer exponential takes any
    n >= 1."""
    for n in (0, -1):
        with pytest.raises(TopologyError, match="n must be >= 1"):
            one_peer_period(n)
        with pytest.raises(TopologyError):
            OnePeerExponential(n)
        with pytest.raises(TopologyError):
            OnePeerExponential(n, symmetric=True)
    for n in (0, -1, 3, 6, 12):
        for call in (lambda n=n: OnePeerExponential(n, symmetric=True),
                     lambda n=n: one_peer_hypercube(n, 0)):
            with pytest.raises(TopologyError, match=f"one-peer hypercube: n must be a power of "
                                                    f"two, got n = {n}"):
                call()
    for n in (3, 6, 12):
        assert OnePeerExponential(n).validate(n).n == n
    assert one_peer_period(1) == one_peer_period(2) == 1


@pytest.mark.parametrize(("n", "symmetric"), [(2, False), (5, False), (8, False), (12, False),
                                              (2, True), (8, True), (16, True)])
def test_a_schedule_lists_every_peer_of_a_period(n: int, symmetric: bool) -> None:
    """peers(i): every j != i that node i sends to or receives from in some step of a period,
    ascending (i ± 2^k mod n for the exponential schedule, i XOR 2^k for the hypercube)."""
    sched = OnePeerExponential(n, symmetric=symmetric)
    for i in range(n):
        want = set()
        for k in range(period_of(n)):
            s = 2 ** k
            want |= {i ^ s} if symmetric else {(i + s) % n, (i - s) % n}
        assert sched.peers(i) == tuple(sorted(want - {i}))
    assert sched.kind == ("one-peer-hypercube" if symmetric else "one-peer-exponential")
    assert sched.name == f"{sched.kind}({n})"


@pytest.mark.parametrize("n", [3, 5, 6, 12])
def test_a_schedule_contracts_by_the_norm_of_its_period_product(n: int) -> None:
    """rho = ||W_{tau-1} ... W_0 − 11ᵀ/n||_2 over one period, recomputed densely here."""
    prod = np.eye(n)
    for t in range(period_of(n)):
        prod = expected(n, t, lambda i, s: i + s) @ prod
    want = np.linalg.norm(prod - np.full((n, n), 1.0 / n), 2)
    sched = OnePeerExponential(n)
    assert sched.rho == pytest.approx(want, rel=1e-9)
    assert sched.period_rho() == pytest.approx(want, rel=1e-9)


def test_a_schedule_whose_period_union_is_disconnected_is_refused() -> None:
    """validate(): each W_t may be disconnected, but not the union over a period; the refusal
    names a node that node 0 cannot reach."""
    sched = OnePeerExponential(4)
    eye = MixingMatrix(sp.csr_array(np.eye(4)), name="identity(4)")
    sched.__dict__["_steps"] = (eye, eye)  # what a broken schedule would produce
    with pytest.raises(TopologyError, match="node 0 cannot reach node 1"):
        sched.validate(4)
    assert OnePeerExponential(4).validate(4).n == 4


def test_a_static_schedule_is_its_matrix_at_every_step() -> None:
    """StaticSchedule(W): W at every t, period 1, and W's n, name, symmetry, rho and checks;
    its peers are W's neighbours, in and out, ascending; it cannot be changed after it is
    made (frozen)."""
    m = metropolis_hastings(ring(6))
    s = StaticSchedule(m)
    assert is_schedule(s) and not is_schedule(m)
    assert s.period == 1 and s.n == 6 and s.name == m.name and s.symmetric
    assert s.rho == m.rho and all(s(t) is m for t in (0, 1, 17))
    assert s.validate(6) is s
    with pytest.raises(dataclasses.FrozenInstanceError):  # shared by every rank's transport
        s.mixing = one_peer_exponential(6, 0)  # type: ignore[misc]
    assert [s.peers(i) for i in (0, 3)] == [(1, 5), (2, 4)]
    d = StaticSchedule(one_peer_exponential(5, 1))  # directed: in 3, out 2 for node 0
    assert d.peers(0) == (2, 3) and not d.symmetric
    with pytest.raises(TopologyError):
        s.validate(5)
