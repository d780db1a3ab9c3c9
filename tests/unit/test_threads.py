"""The in-memory thread transports (decomp.comm.threads) are the executable specification of
the transport protocols: EVERY registered algorithm, run on them for a few steps at n = 2..4
ranks (threads of this process, no MPI), gives the iterates of its decomp.sim reference — on
a static W, on the one-peer hypercube schedule (where the method accepts it) and with a
dedicated master. Also: they satisfy the protocols, and misuse raises the library's errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _methods import build_any

from decomp.algorithms import REGISTRY, AlgorithmSpec, Env
from decomp.comm.protocols import MasterWorkerTransport, NeighborTransport
from decomp.comm.threads import Board, ThreadMasterWorker, ThreadNeighborhood, run_ranks
from decomp.data import load_dataset
from decomp.errors import ConfigError, PayloadError, UsageError
from decomp.problems import Problem, initial_point, split_problem
from decomp.sim import reference
from decomp.topologies import mixing_matrix, mixing_schedule

STEPS = 4
SEED = 5
LR = 0.1


def _build(spec: AlgorithmSpec) -> Any:
    """The method with a compressor it accepts (tests/unit/_methods.py)."""
    return build_any(spec, 9, 4)


def _problem(n: int, d: int = 9) -> tuple[list[Problem], np.ndarray]:
    ds = load_dataset("synthetic", n_samples=30 * n, n_features=d, seed=d)
    return split_problem(ds, "logistic", n), initial_point("normal", d, seed=d)


def _reference(alg: Any, name: str, problems: list[Problem], x0: np.ndarray,
               W: Any = None, aggregation: str = "gather") -> np.ndarray:
    """decomp.sim's iterates of ``alg`` (the one place the reference is called; built from the
    same object): (STEPS + 1, d) for the master–worker family, (STEPS + 1, n, d) for the
    decentralized one."""
    del name
    return reference(alg, problems, x0, W, lr=LR, steps=STEPS, seed=SEED,
                     aggregation=aggregation).xs


def _iterates(alg: Any, env: Env, x0: np.ndarray) -> np.ndarray:
    """This rank's model after init and each of STEPS steps: (STEPS + 1, d)."""
    state = alg.init(env, x0)
    xs = [alg.model(state).copy()]
    for _ in range(STEPS):
        state = alg.step(env, state)
        xs.append(alg.model(state).copy())
    return np.stack(xs)


def _mw(name: str, n: int, master: str, aggregation: str = "gather") -> None:
    alg = _build(REGISTRY[name])
    size = n + (master == "dedicated")
    problems, x0 = _problem(n)
    board = Board(size)

    def rank(r: int) -> np.ndarray:
        tp = ThreadMasterWorker(r, board, master, aggregation)
        prob = problems[tp.worker] if tp.worker is not None else None
        return _iterates(alg, Env(tp, prob, n, SEED, LR), x0)

    got = run_ranks(board, rank)
    ref = np.asarray(_reference(alg, name, problems, x0, aggregation=aggregation))
    for xs in got:  # the model is the same on every rank
        np.testing.assert_array_equal(xs, ref)


def _dec(name: str, n: int, W: Any) -> None:
    alg = _build(REGISTRY[name])
    alg.check_mixing(W)
    problems, x0 = _problem(n)
    board = Board(n)
    got = run_ranks(board, lambda i: _iterates(
        alg, Env(ThreadNeighborhood(W, i, board), problems[i], n, SEED, LR), x0))
    np.testing.assert_array_equal(np.stack(got, axis=1), np.asarray(_reference(
        alg, name, problems, x0, W)))


MW = [s.name for s in REGISTRY.values() if s.family == "master_worker"]
DEC = [s.name for s in REGISTRY.values() if s.family == "decentralized"]


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("name", MW)
def test_every_master_worker_method_on_threads_equals_its_reference(name: str, n: int) -> None:
    _mw(name, n, "shared")


@pytest.mark.parametrize("n", [3, 6])
@pytest.mark.parametrize("name", MW)
def test_every_master_worker_method_on_the_tree_equals_its_reference(name: str, n: int) -> None:
    """aggregation = "tree": the sums are formed in the grouping of decomp.comm.tree's
    schedule, which the reference follows (methods that need the master gather, and their
    reference too)."""
    _mw(name, n, "shared", "tree")


@pytest.mark.parametrize(("n", "layout"), [(5, "flat"), (7, "flat"), (5, "2,3"),
                                           (6, "1,3,2"), (7, "3"), (7, "1,1,5")])
@pytest.mark.parametrize("name", ["ef21", "ef21_pp"])
def test_the_tree_on_uneven_node_layouts_equals_its_reference(name: str, n: int, layout: str,
                                                              monkeypatch) -> None:
    """The fold of a world that is not a power of two (5, 7) and the node-aware split on
    uneven layouts (DECOMP_NODE_LAYOUT: nodes of 2 + 3, 1 + 3 + 2, 3 + 3 + 1, 1 + 1 + 5
    ranks): the thread transport's rounds equal the reference given the same layout."""
    monkeypatch.setenv("DECOMP_NODE_LAYOUT", layout)
    _mw(name, n, "shared", "tree")


@pytest.mark.parametrize("name", MW)
def test_every_master_worker_method_with_a_dedicated_master(name: str) -> None:
    _mw(name, 3, "dedicated")


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("name", DEC)
def test_every_decentralized_method_on_threads_equals_its_reference(name: str, n: int) -> None:
    _dec(name, n, mixing_matrix("ring", n))


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("name", DEC)
def test_every_decentralized_method_on_a_schedule(name: str, n: int) -> None:
    sched = mixing_schedule("one-peer-hypercube", n)
    try:
        _build(REGISTRY[name]).check_mixing(sched)
    except ConfigError:
        pytest.skip(f"{name} refuses a schedule")
    _dec(name, n, sched)


def test_the_thread_transports_satisfy_the_protocols() -> None:
    board = Board(2)
    nb = ThreadNeighborhood(mixing_matrix("ring", 2), 0, board)
    mw = ThreadMasterWorker(0, board)
    assert isinstance(nb, NeighborTransport) and isinstance(mw, MasterWorkerTransport)
    assert nb.peers == nb.sources == (1,) and nb.slot(1) == 0 and nb.select(7) is nb
    assert not nb.time_varying and nb.worker == 0
    tv = ThreadNeighborhood(mixing_schedule("one-peer-hypercube", 4), 0, Board(4))
    assert tv.time_varying and tv.peers == (1, 2) and tv.slot(2) == 1
    assert tv.select(1).sources == (2,) and tv.select(0).sources == (1,)


def test_misuse_is_a_usage_error_and_a_bad_payload_a_payload_error() -> None:
    board = Board(1)
    nb = ThreadNeighborhood(np.ones((1, 1)), 0, board)
    with pytest.raises(PayloadError, match="uint8"):
        nb.exchange(np.zeros(3))
    with pytest.raises(UsageError, match="without exchange_start"):
        nb.exchange_finish()
    nb.exchange_start(np.zeros(2, np.uint8))
    with pytest.raises(UsageError, match="not finished"):
        nb.exchange_start(np.zeros(2, np.uint8))
    mw = ThreadMasterWorker(0, board)
    with pytest.raises(PayloadError, match="uint8"):
        mw.gather(np.zeros(3))
    with pytest.raises(PayloadError, match="fixed at 4"):
        mw.gather(np.zeros(3, np.uint8), 4)
    with pytest.raises(UsageError, match="without gather_start"):
        mw.gather_finish()
    assert isinstance(UsageError("x"), RuntimeError)


def test_master_worker_steps_split_their_time_too() -> None:
    """Both families time a step the same way: the env's timed transport and codecs book comm
    and compress, ``step`` wraps ``_step`` in the watch, compute is the rest."""
    alg = _build(REGISTRY["ef21"])
    problems, x0 = _problem(2)
    board = Board(2)

    def rank(r: int) -> dict[str, float]:
        env = Env(ThreadMasterWorker(r, board), problems[r], 2, SEED, LR)
        state = alg.init(env, x0)
        env.watch.reset()
        for _ in range(STEPS):
            state = alg.step(env, state)
        return env.watch.as_dict()

    for times in run_ranks(board, rank):
        assert times["comm_s"] > 0 and times["compress_s"] > 0 and times["compute_s"] >= 0
