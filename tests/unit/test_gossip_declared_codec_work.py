"""The codec work each compressing decentralized method declares for the network model
(``codec_ops``: encodes and decodes per node per step) is what a step of the real algorithm
object does, counted on the in-memory thread transports — and the netmodel's default degree is
the ring's 2, as for every decentralized method. BEER's and DeepSqueeze's declared step-count
scaling is tagged as the heuristic it is. Written for gaps mutation testing found
(docs/testing.md, "Mutation testing"); it found CHOCO-SGD and BEER declaring half their decodes
(each payload is decoded into the replica and into the kept mixing sum S)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from _inv_harness import LR, SEED, build, problem

from decomp.algorithms import DECENTRALIZED, Env
from decomp.comm.threads import Board, ThreadNeighborhood, run_ranks
from decomp.netmodel.steps import scale_steps
from decomp.topologies import mixing_matrix

N, STEPS = 4, 3
_lock = threading.Lock()


def counting(C: Any) -> Counter[str]:
    """Make ``C`` count its encodes and decodes (every node's thread alike); the counter."""
    count: Counter[str] = Counter()

    class Counting(type(C)):  # type: ignore[misc]
        def encode(self, x, key=None):  # noqa: ANN001, ANN201
            with _lock:
                count["encode"] += 1
            return super().encode(x, key)

        def decode_add(self, payload, out, scale=1.0):  # noqa: ANN001, ANN201
            with _lock:
                count["decode"] += 1
            return super().decode_add(payload, out, scale)

        def decode(self, payload, out=None, **kw):  # noqa: ANN001, ANN003, ANN201
            with _lock:
                count["decode"] += 1
            return super().decode(payload, out, **kw)

    C.__class__ = Counting
    return count


COMPRESSING = [n for n, cls in DECENTRALIZED.items()
               if cls.uses_compressor and n not in ("powergossip", "allreduce_qsgd")]


@pytest.mark.parametrize("name", COMPRESSING)
def test_declared_codec_work_is_what_a_step_does(name: str) -> None:
    """On a ring (degree 2): the encodes and decodes per node per step that ``codec_ops(n, 2)``
    declares equal those the method's step performs (e.g. DeepSqueeze 1 encode, 2 + 2 decodes:
    its own payload into e_i and into the mix, each neighbour's into the mix; CHOCO-SGD 1
    encode, 2 · 3 decodes: every payload into its replica and into S)."""
    alg = build(name)
    count = counting(alg.compressor)
    W = mixing_matrix("ring", N)
    problems, x0 = problem(N)
    board = Board(N)

    def rank(i: int) -> None:
        env = Env(ThreadNeighborhood(W, i, board), problems[i], N, SEED, LR)
        state = alg.init(env, x0)
        for _ in range(STEPS):
            state = alg.step(env, state)

    run_ranks(board, rank)
    declared: Counter[str] = Counter()
    for op in alg.codec_ops(N, W.degree_max):
        if op.op in ("encode", "decode"):
            declared[op.op] += op.count
    assert {k: v / (N * STEPS) for k, v in count.items()} == dict(declared)
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
