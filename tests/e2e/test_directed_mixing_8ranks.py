"""tests/mpi/test_directed_mixing.py at 8 ranks (oversubscribed here): directed and
time-varying W (one-peer exponential with shifts 1, 2, 4; the skewed ring), the transposed
weight, the runner's and the Trainer's refusal and D-PSGD runs, beyond the 4 ranks of
`make test-mpi`."""

from __future__ import annotations


def test_directed_and_time_varying_W_at_8_ranks(at_8_ranks) -> None:
    passed, other, tail = at_8_ranks["test_directed_mixing"]  # one launch (conftest)
    # at least the tests there are at one rank (some parametrizations grow with the world)
    assert other == 0 and passed >= 11, tail
