"""Algorithm objects are pure and timed from outside, without MPI.

The in-memory transports of :mod:`decomp.comm.threads` (one thread per node, a barrier per
collective) stand in for :class:`~decomp.comm.Neighborhood`, so several nodes — and several
runs — share one process:
one algorithm object drives two runs at once and gives what two objects give; nothing is
written to the object by ``init``/``step``; the env's watch splits the time by wrapping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from decomp.algorithms.allreduce import AllreduceCompressed, AllreduceSGD
from decomp.algorithms.choco import CHOCOSGD
from decomp.algorithms.dcd import DCDPSGD
from decomp.algorithms.decentralized_base import DecentralizedAlgorithm
from decomp.algorithms.dense import GD
from decomp.algorithms.dpsgd import DPSGD
from decomp.algorithms.ecd import ECDPSGD
from decomp.algorithms.ef import DCGD, EF
from decomp.algorithms.ef21 import EF21, EF21Plus
from decomp.algorithms.ef21_sgdm import EF21SGDM
from decomp.algorithms.env import Env, Workspace
from decomp.algorithms.sgdm import SGDM
from decomp.comm.threads import Board, ThreadMasterWorker, ThreadNeighborhood
from decomp.comm.timing import COMM, COMPRESS, COMPUTE, Stopwatch, TimedCodec, TimedTransport
from decomp.compress import QSGD, Identity, TopK
from decomp.data import load_dataset
from decomp.problems import Problem, initial_point, split_problem
from decomp.sim import simulate_decentralized
from decomp.topologies import mixing_matrix

STEPS = 12
SEED = 3
BATCH = 8

#: name -> (sim name, factory of a fresh algorithm object, sim keywords)
CASES: dict[str, tuple[str, Callable[[], DecentralizedAlgorithm], dict[str, Any]]] = {
    "dpsgd": ("dpsgd", lambda: DPSGD(batch_size=BATCH), {}),
    "dcd": ("dcd_psgd", lambda: DCDPSGD(QSGD(levels=4), batch_size=BATCH),
            {"compressor": QSGD(levels=4)}),
    "ecd": ("ecd_psgd", lambda: ECDPSGD(QSGD(levels=8), t_start=2, batch_size=BATCH),
            {"compressor": QSGD(levels=8), "t_start": 2}),
    "choco": ("choco_sgd", lambda: CHOCOSGD(TopK(k=3), consensus_step=0.4, batch_size=BATCH),
              {"compressor": TopK(k=3), "consensus_step": 0.4}),
    "allreduce_sgd": ("allreduce_sgd", lambda: AllreduceSGD(batch_size=BATCH), {}),
    "allreduce_qsgd": ("allreduce_qsgd",
                       lambda: AllreduceCompressed(QSGD(levels=16), batch_size=BATCH),
                       {"compressor": QSGD(levels=16)}),
}


# ------------------------------------------------------------------ in-process transports
def OneWorker() -> ThreadMasterWorker:  # noqa: N802
    """A master–worker transport of one shared-master worker (n = 1)."""
    return ThreadMasterWorker(0, Board(1))


class SlowThreadNeighborhood(ThreadNeighborhood):
    """Every exchange takes ``delay`` seconds longer (also a split one, when it is posted)."""

    def __init__(self, W: Any, rank: int, board: Board, delay: float) -> None:
        super().__init__(W, rank, board)
        self.delay = delay

    def exchange_start(self, payload: np.ndarray, nbytes: int | None = None) -> None:
        time.sleep(self.delay)
        super().exchange_start(payload, nbytes)


# ------------------------------------------------------------------ runs
def _problem(n: int, d: int) -> tuple[list[Problem], np.ndarray]:
    ds = load_dataset("synthetic", n_samples=40 * n, n_features=d, seed=d)
    return split_problem(ds, "logistic", n), initial_point("normal", d, seed=d)


class Run:
    """One decentralized run: n nodes on a ring, d features, its own step size."""

    def __init__(self, n: int, d: int, lr: float, delay: float = 0.0) -> None:
        self.W = mixing_matrix("ring", n)
        self.probs, self.x0 = _problem(n, d)
        self.lr, self.n = lr, n
        board = Board(n)

        self.envs = [Env(SlowThreadNeighborhood(self.W, i, board, delay), self.probs[i], n,
                         SEED, lr) for i in range(n)]

    def node(self, alg: DecentralizedAlgorithm, i: int, steps: int) -> tuple[np.ndarray, Any]:
        """Node i's iterates x_i^0..x_i^steps (steps + 1, d) and its final state."""
        env = self.envs[i]
        state = alg.init(env, self.x0)
        xs = [state.x.copy()]
        for _ in range(steps):
            state = alg.step(env, state)
            xs.append(state.x.copy())
        return np.stack(xs), state


def run_together(jobs: list[tuple[Run, DecentralizedAlgorithm]],
                 steps: int = STEPS) -> list[list[tuple[np.ndarray, Any]]]:
    """Every node of every run in its own thread, all at once; per run, per node."""
    tasks = [(r, a, i) for r, a in jobs for i in range(r.n)]
    with ThreadPoolExecutor(len(tasks)) as pool:
        futs = [pool.submit(r.node, a, i, steps) for r, a, i in tasks]
        try:
            res = [f.result(timeout=120) for f in futs]
        except BaseException:
            for r, _ in jobs:
                r.envs[0].transport.board.barrier.abort()
            raise
    out: list[list[tuple[np.ndarray, Any]]] = []
    k = 0
    for r, _ in jobs:
        out.append(res[k:k + r.n])
        k += r.n
    return out


def _snapshot(obj: Any) -> dict[str, tuple[int, str]]:
    return {k: (id(v), repr(v)) for k, v in vars(obj).items()}


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("case", list(CASES))
def test_one_object_serves_two_runs_at_once(case: str) -> None:
    """Two runs (different n, d, γ) interleaved in threads with ONE algorithm object equal
    two separate objects run one after the other, bit for bit, and the reference."""
    name, make, ref_kw = CASES[case]
    shared = make()
    before = _snapshot(shared)
    a, b = Run(4, 9, 0.2), Run(3, 5, 0.05)
    together = run_together([(a, shared), (b, shared)])
    assert _snapshot(shared) == before, "init/step wrote to the algorithm object"
    alone = [run_together([(Run(4, 9, 0.2), make())])[0],
             run_together([(Run(3, 5, 0.05), make())])[0]]
    for run_t, run_s in zip(together, alone, strict=True):
        for (xs_t, st_t), (xs_s, _) in zip(run_t, run_s, strict=True):
            assert np.array_equal(xs_t, xs_s)
            assert st_t.bad == 0
    for run, res in ((a, together[0]), (b, together[1])):
        ref = simulate_decentralized(name, run.probs, run.x0, run.W, lr=run.lr, steps=STEPS,
                                     seed=SEED, batch_size=BATCH, **ref_kw)
        mine = np.stack([xs for xs, _ in res], axis=1)  # (steps + 1, n, d)
        assert np.abs(mine - ref.xs).max() <= 1e-12 * np.abs(ref.xs).max()


@pytest.mark.parametrize("case", ["dcd", "ecd", "choco"])
def test_replica_round_keeps_every_copy_equal(case: str) -> None:
    """After each replica round every holder of node j's public value has the same bits."""
    run = Run(4, 9, 0.2)
    (res,) = run_together([(run, CASES[case][1]())])
    states = [st for _, st in res]
    for i, st in enumerate(states):
        for k, j in enumerate(run.envs[i].transport.sources):  # i's copy of j == j's own
            assert np.array_equal(st.R[1 + k], states[j].R[0])
        if case == "dcd":
            assert np.shares_memory(st.x, st.R[0])


class SlowQSGD(QSGD):
    def encode(self, x: np.ndarray, key: Any = None) -> np.ndarray:
        time.sleep(0.004)
        return super().encode(x, key)


def test_watch_splits_the_step_time_by_wrapping() -> None:
    """Comm and compress time come from the timed transport and codec, compute is the rest of
    the step, and the three add up to the time spent inside ``alg.step``."""
    run = Run(2, 6, 0.1, delay=0.005)
    alg = DCDPSGD(SlowQSGD(levels=4))
    env = run.envs[0]
    assert isinstance(env.transport, TimedTransport)
    assert env.transport.sources == (1,) and env.transport.indegree == 1
    assert env.transport.bytes is env.transport.inner.bytes
    assert isinstance(env.codec(alg.compressor), TimedCodec)
    assert env.codec(alg.compressor) is env.codec(alg.compressor)  # cached, not rebuilt
    t0 = time.perf_counter()
    run_together([(run, alg)], steps=5)
    wall = time.perf_counter() - t0
    for e in run.envs:
        times = e.watch.as_dict()
        assert set(times) == {"compute_s", "compress_s", "comm_s"}
        assert times["comm_s"] >= 5 * 0.005
        assert times["compress_s"] >= 5 * 0.004
        assert times["compute_s"] >= 0.0
        assert sum(times.values()) <= wall
    env.watch.reset()
    assert env.watch.as_dict() == {"compute_s": 0.0, "compress_s": 0.0, "comm_s": 0.0}


def test_stopwatch_books_a_step_minus_its_inner_sections() -> None:
    sw = Stopwatch()
    totals = sw.totals
    t0 = time.perf_counter()
    with sw:
        time.sleep(0.01)
        sw.add(COMM, 0.004)
        sw.add(COMPRESS, 0.002)
    wall = time.perf_counter() - t0  # bounds the step from above, whatever the load
    assert 0.01 - 0.006 <= sw.totals[COMPUTE] <= wall - 0.006
    assert sw.totals[COMM] == 0.004 and sw.totals[COMPRESS] == 0.002
    sw.reset()
    assert sw.totals is totals and totals == [0.0, 0.0, 0.0]


def test_no_timing_calls_in_step_bodies() -> None:
    import inspect

    import decomp.algorithms.allreduce as m1
    import decomp.algorithms.choco as m2
    import decomp.algorithms.dcd as m3
    import decomp.algorithms.dpsgd as m4
    import decomp.algorithms.ecd as m5
    for mod in (m1, m2, m3, m4, m5):
        src = inspect.getsource(mod)
        assert ".lap(" not in src and ".start()" not in src and "watch" not in src, mod


def test_workspace_reuses_by_name_shape_and_dtype() -> None:
    ws = Workspace()
    a = ws.array("tmp", (3,), np.float64)
    assert ws.array("tmp", (3,), np.float64) is a
    assert ws.array("tmp", (4,), np.float64) is not a
    assert ws.array("tmp", (4,), np.float32).dtype == np.float32
    env = Env(OneWorker(), None, 1, 0, 0.1)  # type: ignore[arg-type]
    x = np.zeros(5, np.float32)
    assert env.scratch("acc", x) is env.scratch("acc", like=x)
    assert env.scratch("acc", x).shape == (5,) and env.scratch("acc", x).dtype == np.float32
    with pytest.raises(TypeError):
        env.scratch("acc")


MW_CASES: dict[str, Callable[[], Any]] = {
    "gd": lambda: GD(),
    "sgdm": lambda: SGDM(momentum=0.5, batch_size=BATCH),
    "ef": lambda: EF(TopK(k=2)),
    "dcgd": lambda: DCGD(QSGD(levels=4)),
    "ef21": lambda: EF21(TopK(k=2)),
    "ef21_plus": lambda: EF21Plus(TopK(k=2)),
    "ef21_sgdm": lambda: EF21SGDM(TopK(k=2), batch_size=BATCH),
}


@pytest.mark.parametrize("case", list(MW_CASES))
def test_master_worker_objects_are_pure_too(case: str) -> None:
    """Two one-worker runs interleaved step by step with one object equal separate objects."""
    probs, x0 = _problem(1, 7)
    probs2, x02 = _problem(1, 4)

    def env(p: Problem, lr: float) -> Env:
        return Env(OneWorker(), p, 1, SEED, lr)  # type: ignore[arg-type]

    shared = MW_CASES[case]()
    before = _snapshot(shared)
    ea, eb = env(probs[0], 0.3), env(probs2[0], 0.1)
    sa, sb = shared.init(ea, x0), shared.init(eb, x02)
    for _ in range(STEPS):
        sa, sb = shared.step(ea, sa), shared.step(eb, sb)
    assert _snapshot(shared) == before
    for p, x, lr, s in ((probs[0], x0, 0.3, sa), (probs2[0], x02, 0.1, sb)):
        alone = MW_CASES[case]()
        e = env(p, lr)
        st = alone.init(e, x)
        for _ in range(STEPS):
            st = alone.step(e, st)
        assert np.array_equal(st.x, s.x)


def test_identity_codec_is_timed_and_transparent() -> None:
    sw = Stopwatch()
    C = TimedCodec(Identity(), sw)
    x = np.arange(4.0)
    p = C.encode(x)
    out = np.ones(4)
    C.decode_add(p, out, 2.0)
    assert np.array_equal(out, 1 + 2 * x) and np.array_equal(C.decode(p), x)
    assert C.payload_bytes(4, np.float64) == Identity().payload_bytes(4, np.float64)
    assert C.is_unbiased and sw.totals[COMPRESS] > 0 and sw.totals[COMM] == 0
