"""Preemption in the user's own loop: the stop vote of ``decomp run`` behind
``opt.should_stop()``, and the check that a collective call (``opt.save``, ``opt.load``,
``opt.export``) was made by every rank.

``should_stop()`` is :class:`decomp.comm.control.StopVote` on the process's
:data:`decomp.runner.lifecycle.SIGNALS` flag, as ``decomp run``'s loop uses them: the first call
installs handlers for SIGINT, SIGTERM and SIGUSR1 that only record the signal; every call (once
per step, on every rank) completes the vote posted by the previous call and posts a new one, so
a signal that reached any rank is answered "stop" on every rank at the same call — one step
after the signal was seen, the latency hidden behind that step's work. A second SIGINT while
a stop is pending ends the process at once (exit 130).

:func:`agree` is how a collective call of the user's loop fails clearly instead of hanging
or writing a partial checkpoint when only some ranks make it (the DDP habit ``if rank == 0:
save(...)``): every rank reports (call, step, argument) to rank 0 by a point-to-point message
on its own tag; rank 0 waits up to ``timeout_s`` for all of them, checks that they agree and
answers every rank that came. A rank missing at the deadline, or a difference, raises the
same :class:`~decomp.errors.ConfigError` on every rank that made the call, naming the ranks.
"""

from __future__ import annotations

import atexit
import time
from typing import Any

from decomp.errors import ConfigError

#: point-to-point tags of :func:`agree` on the optimizer's communicator (the transports use
#: collectives, or their own graph communicator, there)
_TAG_CALL, _TAG_ANSWER = 0x5A7E, 0x5A7F
#: the default limit on how long a collective call waits for the other ranks (decomp run's
#: run.comm_timeout_s default)
DEFAULT_TIMEOUT_S = 300.0
_POLL_S = 0.005


class StopPoll:
    """``should_stop()`` of one optimizer over ``comm`` (see the module doc)."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.vote: Any = None
        self.signum = 0  # the agreed signal (0: none yet)
        self.at_step = -1

    def should_stop(self, step: int) -> bool:
        """Collective, once per step on every rank: True on every rank at the same call once
        a stop signal reached any rank (and from then on, without communicating)."""
        if self.signum:
            return True
        from decomp.runner.lifecycle import SIGNALS

        if self.vote is None:
            if not SIGNALS.installed:
                SIGNALS.__enter__()
            SIGNALS.deferred = True  # from now on a signal only sets the flag
            if self.comm.Get_size() > 1:
                from decomp.comm.control import StopVote

                self.vote = StopVote(self.comm)
                atexit.register(self.close)  # the vote in flight, before MPI_Finalize
        wish = SIGNALS.signum
        signum = self.vote.poll(wish) if self.vote is not None else wish
        if signum:
            self.signum, self.at_step = signum, step
            self.close()  # every rank is here: complete the vote in flight, free its comm
        return bool(signum)

    def close(self) -> None:
        """Collective: complete the vote in flight and free its communicator."""
        if self.vote is not None:
            vote, self.vote = self.vote, None
            vote.close()

    @property
    def exit_code(self) -> int:
        """128 + the agreed signal (130 SIGINT, 143 SIGTERM, 138 SIGUSR1), as ``decomp run``
        exits after a stop; 0 when no stop was agreed."""
        from decomp.runner.lifecycle import exit_code

        return exit_code(self.signum) if self.signum else 0


def agree(comm: Any, call: str, step: int, arg: str, timeout_s: float) -> None:
    """Collective check that every rank of ``comm`` is in ``call`` at ``step`` with ``arg``
    (a folder or file); raises the same ConfigError on every rank that made the call when a
    rank is missing after ``timeout_s`` or the ranks differ (see the module doc)."""
    size, rank = comm.Get_size(), comm.Get_rank()
    if size == 1:
        return
    mine = (call, int(step), str(arg))
    deadline = time.monotonic() + timeout_s
    if rank != 0:
        sent = comm.isend(mine, dest=0, tag=_TAG_CALL)
        answer = _wait_message(comm, 0, _TAG_ANSWER, deadline)
        if answer is None:  # rank 0 never came: our message is left unmatched, the job ends
            raise ConfigError(
                f"{call}() is collective: rank {rank} called it at step {step}, but rank 0 "
                f"did not within {timeout_s:g} s. Call {call}() on every rank (each rank "
                "writes or reads its own state), not under `if rank == ...`")
        sent.wait()
        if answer:
            raise ConfigError(answer)
        return
    calls: dict[int, tuple[str, int, str]] = {0: mine}
    for r in range(1, size):
        got = _wait_message(comm, r, _TAG_CALL, deadline)
        if got is not None:
            calls[r] = got
    answer = _verdict(call, calls, size, timeout_s)
    for r in calls:
        if r:
            comm.send(answer, dest=r, tag=_TAG_ANSWER)
    if answer:
        raise ConfigError(answer)


def _wait_message(comm: Any, source: int, tag: int, deadline: float) -> Any:
    """The next pickled message from ``source`` with ``tag``, or None at ``deadline``."""
    while not comm.iprobe(source=source, tag=tag):
        if time.monotonic() > deadline:
            return None
        time.sleep(_POLL_S)
    return comm.recv(source=source, tag=tag)


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def _verdict(call: str, calls: dict[int, tuple[str, int, str]], size: int,
             timeout_s: float) -> str:
    """"" when every rank made the same call, else the error every caller raises."""
    missing = [r for r in range(size) if r not in calls]
    if missing:
        came = sorted(calls)
        return (f"{call}() is collective: {_ranks(came)} called it at step {calls[0][1]}, but "
                f"{_ranks(missing)} did not within {timeout_s:g} s — nothing was written. A "
                f"DDP-style `if rank == 0: {call}(...)` cannot work: every rank holds its own "
                f"state (error feedback, local models). Call {call}() on every rank")
    ref = calls[0]
    for r, c in sorted(calls.items()):
        if c != ref:
            what = ("calls" if c[0] != ref[0] else "steps" if c[1] != ref[1] else "paths")
            return (f"{call}(): the ranks differ in their {what}: rank 0 {ref[0]}() at step "
                    f"{ref[1]} on {ref[2]!r}, rank {r} {c[0]}() at step {c[1]} on {c[2]!r}. "
                    "Every rank must make the same call after the same step, with the same "
                    "path (a folder every rank sees)")
    return ""


__all__ = ["DEFAULT_TIMEOUT_S", "StopPoll", "agree"]
