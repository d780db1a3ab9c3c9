"""PowerGossip (decomp.algorithms.powergossip) on the in-memory thread transports, on a model of
several tensors (an artificial layout over a logistic regression's 30 weights: a 6×4 matrix, a
3-vector and a 3×1 matrix):

- every node's iterates, factors and counts equal the reference's bit for bit, on a ring (2
  and 4 nodes) and on the one-peer hypercube, for rank 1 and 2, one and two power steps per
  step, a cold start, a consensus step below 1, minibatch gradients, float32;
- the bytes a node sends per edge and power step are r'·m or r'·k per compressed matrix
  (alternating) plus the dense tensors in the first power step: the transport's counter, the
  reference's and the class's comm_pattern (its mean over two steps) agree, and equal the
  formula written out here;
- the option checks, the refusal of a directed W, and ``swap``'s contract.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from decomp.algorithms import Env
from decomp.algorithms.powergossip import PowerGossip
from decomp.comm.threads import Board, ThreadNeighborhood, run_ranks
from decomp.data import load_dataset
from decomp.errors import ConfigError, UsageError
from decomp.layout import Layout
from decomp.problems import initial_point, split_problem
from decomp.sim import reference
from decomp.topologies import mixing_matrix, mixing_schedule

SEED, LR, STEPS = 5, 0.3, 12
LAYOUT = Layout.from_shapes([("w", (6, 4)), ("b", (3,)), ("v", (3, 1))])

OPTIONS = {
    "rank1": {},
    "rank2-two-steps": {"rank": 2, "power_iterations": 2},
    "cold-start": {"warm_start": False, "consensus_step": 0.5},
    "minibatch": {"batch_size": 8},
}


def _problem(n: int, dtype: str = "float64") -> tuple[list[Any], np.ndarray]:
    ds = load_dataset("synthetic", n_samples=40 * n, n_features=LAYOUT.d, seed=7, dtype=dtype)
    return split_problem(ds, "logistic", n), initial_point("normal", LAYOUT.d, seed=1).astype(dtype)


def _run(alg: Any, mixing: Any, n: int, dtype: str = "float64",
         steps: int = STEPS) -> tuple[list[Any], Any]:
    """(per node: (iterates (steps+1, d), final state, bytes up, bytes down), reference)."""
    probs, x0 = _problem(n, dtype)
    board = Board(n)

    def node(i: int) -> tuple[np.ndarray, Any, int, int]:
        tp = ThreadNeighborhood(mixing, i, board)
        env = Env(tp, probs[i], n, SEED, LR, layout=LAYOUT)
        state = alg.init(env, x0)
        xs = [state.x.copy()]
        for _ in range(steps):
            state = alg.step(env, state)
            xs.append(state.x.copy())
        return np.stack(xs), state, tp.bytes.up, tp.bytes.down

    out = run_ranks(board, node)
    return out, reference(alg, probs, x0, mixing, lr=LR, steps=steps, seed=SEED, layout=LAYOUT)


MIXINGS = {"ring-4": (lambda: mixing_matrix("ring", 4), 4),
           "ring-2": (lambda: mixing_matrix("ring", 2), 2),
           "hypercube-4": (lambda: mixing_schedule("one-peer-hypercube", 4), 4)}


@pytest.mark.parametrize("mixing", list(MIXINGS))
@pytest.mark.parametrize("case", list(OPTIONS))
def test_threads_equal_the_reference_bit_for_bit(case: str, mixing: str) -> None:
    alg = PowerGossip(**OPTIONS[case])
    make, n = MIXINGS[mixing]
    out, ref = _run(alg, make(), n)
    for i, (xs, state, up, down) in enumerate(out):
        np.testing.assert_array_equal(xs, ref.xs[:, i])
        for f in ("P", "Q", "uses"):
            np.testing.assert_array_equal(getattr(state, f), ref.state[f][i], err_msg=f)
        assert (up, down) == (ref.bytes_sent[i], ref.bytes_received[i])
        assert state.bad == 0
    assert np.abs(ref.xs[-1] - ref.xs[0]).max() > 0.05
    assert ref.consensus_distance()[-1] > 0  # the nodes differ: gossip is not trivial


def test_float32_threads_equal_the_reference() -> None:
    out, ref = _run(PowerGossip(rank=2), mixing_matrix("ring", 4), 4, dtype="float32")
    for i, (xs, *_rest) in enumerate(out):
        assert xs.dtype == np.float32
        np.testing.assert_array_equal(xs, ref.xs[:, i])


@pytest.mark.parametrize("power_iterations", [1, 2])
def test_bytes_are_the_low_rank_factors_plus_the_dense_tensors(power_iterations: int) -> None:
    """Ring of 4 (degree 2), float64: per step and edge, the 3-vector (24 B) and per power step
    r'·m = 6 + 3 values (a right product) or r'·k = 4 + 1 (a left one), alternating from the
    second step (the first has nothing to compress: every x_i^0 is the same)."""
    alg = PowerGossip(power_iterations=power_iterations)
    out, ref = _run(alg, mixing_matrix("ring", 4), 4)
    # power steps 1, 2, ...: the c-th is a right product iff power_iterations + c − 1 is odd
    c = power_iterations * (STEPS - 1)
    rights = sum(1 for u in range(c) if (power_iterations + u) % 2 == 1)
    per_edge = STEPS * 3 * 8 + rights * 9 * 8 + (c - rights) * 5 * 8
    assert all(up == 2 * per_edge for _, _, up, _ in out)
    assert list(ref.bytes_sent) == [2 * per_edge] * 4
    calls = alg.comm_pattern(LAYOUT.d, 4, 2, layout=LAYOUT)
    assert len(calls) == power_iterations and all(k.call == "exchange" for k in calls)
    steady = sum(k.nbytes * k.fan for k in calls)  # the mean of a right and a left step
    two = reference(alg, *_problem(4), mixing_matrix("ring", 4), lr=LR, steps=5, seed=SEED,
                    layout=LAYOUT).bytes_sent - reference(
        alg, *_problem(4), mixing_matrix("ring", 4), lr=LR, steps=3, seed=SEED,
        layout=LAYOUT).bytes_sent
    assert (two == 2 * steady).all(), (two, steady)
    # against dense gossip of all 30 values: (3 + 7) / 30 of the bytes at one power step
    assert steady == 2 * (3 + (9 + 5) / 2 * power_iterations) * 8


def test_without_a_layout_every_value_gossips_dense() -> None:
    """One flat slot: no matrix, so PowerGossip is D-PSGD's X ← W X − γ G (mixing first)."""
    probs, x0 = _problem(4)
    W = mixing_matrix("ring", 4)
    ref = reference(PowerGossip(), probs, x0, W, lr=LR, steps=4, seed=SEED)
    dp = reference(__import__("decomp.algorithms", fromlist=["DPSGD"]).DPSGD(), probs, x0, W,
                   lr=LR, steps=4, seed=SEED)
    np.testing.assert_allclose(ref.xs, dp.xs, rtol=0, atol=1e-14)
    assert (ref.bytes_sent == dp.bytes_sent).all()


def test_options_are_checked_and_a_directed_w_is_refused() -> None:
    for bad, match in (({"rank": 0}, "rank must be an integer >= 1"),
                       ({"power_iterations": 1.5}, "power_iterations must be an integer"),
                       ({"consensus_step": 0}, "consensus_step must be a finite number > 0"),
                       ({"min_compression_rate": -1}, "min_compression_rate must be"),
                       ({"warm_start": "yes"}, "warm_start must be true or false")):
        with pytest.raises(ConfigError, match=match):
            PowerGossip(**bad)
    with pytest.raises(ConfigError, match="needs a symmetric W"):
        PowerGossip().check_mixing(mixing_schedule("one-peer-exponential", 4))
    PowerGossip().check_mixing(mixing_schedule("one-peer-hypercube", 4))


def test_swap_sends_one_message_per_edge_and_checks_its_arguments() -> None:
    board = Board(2)
    W = mixing_matrix("ring", 2)

    def node(i: int) -> Any:
        tp = ThreadNeighborhood(W, i, board)
        got = tp.swap({1 - i: np.full(3 + 0, i, dtype=np.uint8)})
        with pytest.raises(UsageError, match="one payload per neighbour"):
            tp.swap({})
        return got[1 - i].tolist(), tp.bytes.up, tp.bytes.down

    assert run_ranks(board, node) == [([1, 1, 1], 3, 3), ([0, 0, 0], 3, 3)]
