"""Checkpoints by value (issue 25, item 3), for EVERY registered method: a Session's
``state_dict`` holds every field of the method's state NamedTuple (the list comes from the
NamedTuple's ``_fields``, not from a hand list), each array equal by value to the live one and
a copy of it; ``load_state_dict`` into a fresh session — whose arrays were first filled with
NaN, so a field the restore skips cannot pass by chance — gives back every field by value;
and the checkpoint written to disk (CheckpointStore, one .npz per rank) restores the same.
Both restored sessions then continue bit for bit with the uninterrupted one.

The sessions run on the in-memory thread transports (several ranks in one process): a ring
of 3 (decentralized), the one-peer hypercube where a method keeps per-edge state, and a
shared and a dedicated master (master–worker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _inv_harness import SEED, build, problem

from decomp.algorithms import REGISTRY
from decomp.comm.threads import Board, ThreadMasterWorker, ThreadNeighborhood, run_ranks
from decomp.errors import ConfigError
from decomp.runner.checkpoint import CheckpointStore, split_state
from decomp.runner.resume import restore_session, session_meta
from decomp.runner.session import Session
from decomp.topologies import mixing_matrix, mixing_schedule

BEFORE, AFTER = 3, 2  # steps before the checkpoint, and after it
LR = 0.05


class _Neighborhood(ThreadNeighborhood):
    """A thread node as a Session sees a transport (its n is ``n_workers``)."""

    @property
    def n_workers(self) -> int:
        return self.size


class _Comm:
    """The four calls CheckpointStore makes on its communicator, over a thread Board."""

    def __init__(self, rank: int, board: Board) -> None:
        self.rank, self.board = rank, board

    def Get_rank(self) -> int:  # noqa: N802 - the mpi4py name
        return self.rank

    def Get_size(self) -> int:  # noqa: N802
        return self.board.n

    def allgather(self, value: Any) -> list[Any]:
        return self.board.publish(self.rank, value)

    def Barrier(self) -> None:  # noqa: N802
        self.board.barrier.wait()


class _NoBuffers:
    def buffers(self) -> list[np.ndarray]:
        return []


def _cases() -> list[tuple[str, str]]:
    out = []
    for name, spec in REGISTRY.items():
        if spec.family == "master_worker":
            out += [(name, "shared"), (name, "dedicated")]
            continue
        out.append((name, "ring"))
        try:
            build(name).check_mixing(mixing_schedule("one-peer-hypercube", 4))
            out.append((name, "hypercube"))
        except ConfigError:
            pass
    return out


def _fields_by_value(a: Any, b: Any, what: str) -> None:
    """Every field of two states of the same NamedTuple, compared by value."""
    assert type(a) is type(b) and a._fields == b._fields, what
    for f in a._fields:
        x, y = getattr(a, f), getattr(b, f)
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray) and x.dtype == y.dtype, (what, f)
            np.testing.assert_array_equal(x, y, err_msg=f"{what}: field {f}")
        else:
            assert x == y, (what, f, x, y)


def _poison(state: Any) -> None:
    """Fill every float array of a fresh state with NaN (a skipped field then shows)."""
    for v in state:
        if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating):
            v[...] = np.nan


@pytest.mark.parametrize("name,where", _cases(), ids=[f"{n}-{w}" for n, w in _cases()])
def test_a_checkpoint_round_trip_keeps_every_state_field_by_value(
        tmp_path: Path, name: str, where: str) -> None:
    alg = build(name)
    mw = REGISTRY[name].family == "master_worker"
    n = 4 if where == "hypercube" else 3
    size = n + (where == "dedicated")
    problems, x0 = problem(n)
    W = mixing_schedule("one-peer-hypercube", n) if where == "hypercube" else \
        mixing_matrix("ring", n)
    boards = [Board(size) for _ in range(4)]  # the run, state_dict copy, disk copy, the store

    def session(r: int, board: Board) -> Session:
        tp: Any = ThreadMasterWorker(r, board, "dedicated" if where == "dedicated" else
                                     "shared") if mw else _Neighborhood(W, r, board)
        prob = problems[tp.worker] if tp.worker is not None else None
        return Session(alg, tp, prob, lr=LR, seed=SEED)

    def rank(r: int) -> None:
        live = session(r, boards[0])
        live.init(x0)
        for _ in range(BEFORE):
            live.step()
        sd = live.state_dict()
        fields = live.state._fields
        assert set(sd["state"]) == set(fields), f"checkpoint fields vs {fields}"
        arrays, scalars = split_state(live.state)
        assert set(arrays) | set(scalars) == set(fields)
        assert any(isinstance(v, np.ndarray) and v.size for v in live.state)
        for f in fields:
            v = getattr(live.state, f)
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(sd["state"][f], v, err_msg=f)
                assert not np.shares_memory(sd["state"][f], v), f"{f} is not a copy"
            else:
                assert sd["state"][f] == v, f
        store = CheckpointStore(tmp_path, _Comm(r, boards[3]))
        store.save(0, BEFORE, live.state, session_meta(live, {}, {}, "ok", ""), [], {})
        pointer = store.read_pointer(0)
        assert pointer is not None and pointer["step"] == BEFORE

        copies = []
        for board, how in ((boards[1], "state_dict"), (boards[2], "disk")):
            s = session(r, board)
            s.init(x0)
            _poison(s.state)
            if how == "state_dict":
                s.load_state_dict(sd)
            else:
                restore_session(s, store, pointer, _NoBuffers())  # type: ignore[arg-type]
            _fields_by_value(s.state, live.state, f"rank {r} after load ({how})")
            assert s.steps_done == BEFORE
            assert [s.transport.bytes.up, s.transport.bytes.down] == \
                [live.transport.bytes.up, live.transport.bytes.down]
            copies.append(s)
        for _ in range(AFTER):
            for s in (live, *copies):
                s.step()
        for s, how in zip(copies, ("state_dict", "disk"), strict=True):
            _fields_by_value(s.state, live.state, f"rank {r} {AFTER} steps on ({how})")

    def guarded(r: int) -> None:  # a failing rank breaks every board: nobody waits 60 s
        try:
            rank(r)
        except BaseException:
            for b in boards:
                b.abort()
            raise

    run_ranks(boards[0], guarded)


def test_a_state_field_left_out_of_the_checkpoint_is_refused() -> None:
    """restore_state compares the saved fields with the NamedTuple's: one missing is an
    error, never a silently kept init value."""
    from decomp.runner.checkpoint import restore_state

    alg = build("ef21")
    problems, x0 = problem(1)
    s = Session(alg, ThreadMasterWorker(0, Board(1)), problems[0], lr=LR, seed=SEED)
    s.init(x0)
    arrays, scalars = split_state(s.state)
    arrays.pop("g_local")
    with pytest.raises(ConfigError, match="do not match"):
        restore_state(s.state, arrays, scalars)
