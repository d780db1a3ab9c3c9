"""Whom each rank's watchdog watches and how it describes a rank (decomp/comm/watchdog.py):
up to ALL_PEERS_UP_TO ranks every rank watches every other; above it, exactly its two ring
neighbours, wrapping around — so watching is mutual and every rank is watched by two; a
rank's state reads as finished, working on its own (ready, in no call), still starting, or
in a named call, with its call and step counts."""

from __future__ import annotations

import pytest

from decomp.comm.watchdog import ALL_PEERS_UP_TO, DONE, READY, STARTING, PeerState, watch_peers


@pytest.mark.parametrize("size", [2, 3, ALL_PEERS_UP_TO])
def test_up_to_the_limit_every_rank_watches_every_other(size: int) -> None:
    for rank in range(size):
        assert watch_peers(rank, size) == [r for r in range(size) if r != rank]


@pytest.mark.parametrize("size", [ALL_PEERS_UP_TO + 1, 20, 64])
def test_above_the_limit_a_rank_watches_its_two_ring_neighbours(size: int) -> None:
    for rank in range(size):
        assert watch_peers(rank, size) == sorted({(rank - 1 + size) % size, (rank + 1) % size})
    assert watch_peers(0, size) == [1, size - 1]
    assert watch_peers(size - 1, size) == [0, size - 2]
    watched_by = {r: [p for p in range(size) if r in watch_peers(p, size)] for r in range(size)}
    assert all(watched_by[r] == watch_peers(r, size) for r in range(size))  # mutual


def test_a_ranks_state_reads_as_what_it_is_doing() -> None:
    assert PeerState(7, 3, None, READY).where() == \
        "in no collective call (after 3 calls, step 7: working on its own)"
    assert PeerState(0, 0, None, STARTING).where() == "still starting (before its first call)"
    assert PeerState().where() == "still starting (before its first call)"
    assert PeerState(9, 4, "opt.step()", READY).where() == \
        "in opt.step() (its call 5, after step 9)"
    assert PeerState(9, 4, None, DONE).where() == "finished (after 4 calls, step 9)"
