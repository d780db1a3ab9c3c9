"""BEER, DeepSqueeze and the per-edge replicas of CHOCO-SGD / DCD-PSGD record the FIRST step a
node went non-finite at (``state.bad``; 0 = never), on a static W and on the one-peer
hypercube, where BEER's first step exchanges nothing (H^0 = G^0 = 0), so only its own
finiteness check can see a non-finite start at step 1. The real algorithm objects on the
in-memory thread transports. Written for gaps mutation testing found (docs/testing.md,
"Mutation testing")."""

from __future__ import annotations

import numpy as np
import pytest
from _inv_harness import LR, SEED, build, problem

from decomp.algorithms import Env
from decomp.comm.threads import Board, ThreadNeighborhood, run_ranks
from decomp.compress import Identity, TopK
from decomp.topologies import mixing_matrix, mixing_schedule

CASES = [("beer", {"consensus_step": 0.5}, "ring"),
         ("beer", {"consensus_step": 0.5}, "one-peer-hypercube"),
         ("deepsqueeze", {"consensus_step": 0.5}, "ring"),
         ("deepsqueeze", {"consensus_step": 0.5}, "one-peer-hypercube"),
         ("choco_sgd", {"consensus_step": 0.5}, "one-peer-hypercube"),
         ("dcd_psgd", {}, "one-peer-hypercube")]


def _bad_after(name: str, opts: dict, kind: str, n: int, steps: int, nan_at: int) -> list[int]:
    """state.bad of every node after ``steps`` steps; x^0 has a NaN (nan_at = 0) or node 0's
    gradient turns NaN from step ``nan_at`` on (x^0 finite)."""
    alg = build(name, Identity() if name == "dcd_psgd" else TopK(3), **opts)  # DCD: unbiased
    W = mixing_schedule(kind, n) if kind.startswith("one-peer") else mixing_matrix(kind, n)
    problems, x0 = problem(n)
    if nan_at == 0:
        x0 = x0.copy()
        x0[1] = np.nan
    clean = alg.grad

    def grad(env, x, step):  # noqa: ANN001, ANN202
        g = clean(env, x, step)
        return g * np.nan if nan_at and env.rank == 0 and step >= nan_at else g

    alg.grad = grad
    board = Board(n)

    def rank(i: int) -> int:
        env = Env(ThreadNeighborhood(W, i, board), problems[i], n, SEED, LR)
        state = alg.init(env, x0)
        for _ in range(steps):
            state = alg.step(env, state)
        return state.bad

    return run_ranks(board, rank)


@pytest.mark.parametrize("name,opts,kind", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_a_non_finite_start_is_recorded_at_step_1(name: str, opts: dict, kind: str) -> None:
    """x^0 with a NaN: every node's first step is already non-finite, so bad = 1 on every
    node, and the later (still non-finite) steps do not overwrite it."""
    assert _bad_after(name, opts, kind, 4, 4, nan_at=0) == [1] * 4


@pytest.mark.parametrize("name,opts,kind", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_a_gradient_gone_non_finite_is_recorded_at_its_step(name: str, opts: dict,
                                                            kind: str) -> None:
    """Node 0's gradient turns NaN at step 3 (finite before): node 0 is bad from step 3 — not
    earlier, not later — and no node is bad before the NaN could reach it."""
    bad = _bad_after(name, opts, kind, 4, 6, nan_at=3)
    assert bad[0] == 3, bad
    assert all(b == 0 or b >= 3 for b in bad), bad
