"""The codec work DeepSqueeze declares for the network model (``codec_ops``: encodes and
decodes per node per step) is what a step of the real algorithm object does, counted on the
in-memory thread transports — and the netmodel's default degree is the ring's 2, as for every
decentralized method. BEER's and DeepSqueeze's declared step-count scaling is tagged as the
heuristic it is. Written for gaps mutation testing found (docs/testing.md, "Mutation
testing").

(Not asserted for BEER and CHOCO-SGD: they decode each payload twice, into the replica and
into the kept mixing sum S — 2 (1 + k) decode_adds per round — while the inherited
``codec_ops`` declares 1 + k; see docs/testing.md, second mutation run.)"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from _inv_harness import LR, SEED, build, problem

from decomp.algorithms import DECENTRALIZED, Env
from decomp.comm.threads import Board, ThreadNeighborhood, run_ranks
from decomp.compress import TopK
from decomp.netmodel.steps import scale_steps
from decomp.topologies import mixing_matrix

N, STEPS = 4, 3
_lock = threading.Lock()


class CountingTopK(TopK):
    """Top-k that counts its encodes and decodes (every node's thread alike)."""

    def __init__(self, k: int) -> None:
        super().__init__(k)
        self.count: Counter[str] = Counter()

    def encode(self, x, key=None):  # noqa: ANN001, ANN201
        with _lock:
            self.count["encode"] += 1
        return super().encode(x, key)

    def decode_add(self, payload, out, scale=1.0):  # noqa: ANN001, ANN201
        with _lock:
            self.count["decode"] += 1
        return super().decode_add(payload, out, scale)

    def decode(self, payload, out=None, **kw):  # noqa: ANN001, ANN003, ANN201
        with _lock:
            self.count["decode"] += 1
        return super().decode(payload, out, **kw)


def test_declared_codec_work_is_what_a_step_does() -> None:
    """On a ring (degree 2): the encodes and decodes per node per step that ``codec_ops(n, 2)``
    declares equal those DeepSqueeze's step performs: 1 encode, 2 + 2 decodes (its own payload
    into e_i and into the mix, each neighbour's into the mix)."""
    C = CountingTopK(3)
    alg = build("deepsqueeze", C, consensus_step=0.5)
    W = mixing_matrix("ring", N)
    problems, x0 = problem(N)
    board = Board(N)

    def rank(i: int) -> None:
        env = Env(ThreadNeighborhood(W, i, board), problems[i], N, SEED, LR)
        state = alg.init(env, x0)
        for _ in range(STEPS):
            state = alg.step(env, state)

    run_ranks(board, rank)
    declared = Counter()
    for op in alg.codec_ops(N, W.degree_max):
        if op.op in ("encode", "decode"):
            declared[op.op] += op.count
    assert {k: v / (N * STEPS) for k, v in C.count.items()} == dict(declared)
    assert alg.codec_ops(N) == alg.codec_ops(N, 2)  # the netmodel's default degree


def test_every_decentralized_method_prices_a_ring_by_default() -> None:
    """codec_ops(n) without a degree is the ring's (degree 2) for every decentralized
    class, so a default means the same whichever method is priced."""
    for name, cls in DECENTRALIZED.items():
        alg = build(name)
        assert alg.codec_ops(8) == alg.codec_ops(8, 2), (name, cls)


@pytest.mark.parametrize("name", ["beer", "deepsqueeze"])
def test_their_step_count_scaling_is_tagged_heuristic(name: str) -> None:
    """Neither paper's bound is what the extrapolation uses (docs/algorithms.md): the network
    model must say "heuristic", not "theory", when it scales their measured steps to another
    W."""
    steps, how = scale_steps(name, 100, 0.5, 0.8)
    assert how.startswith("heuristic") and steps > 100, how
