"""Control traffic of the run's lifecycle (never counted as payload): the stop vote.

A signal (SIGINT, SIGTERM, SIGUSR1) may reach one rank, several, or all of them at slightly
different steps. :class:`StopVote` turns "some rank wants to stop" into "every rank stops after
the same step": one non-blocking MAX all-reduce of a small integer per step on a private
duplicate of the communicator, posted after step t and completed after step t + 1, so its
latency hides behind the step's own work. Every rank reads the same result of the same
collective, hence stops at the same step.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class StopVote:
    """The collective "should we stop?" of one run.

    comm: the run's communicator (duplicated here; the duplicate is freed by :meth:`close`).
    :meth:`poll` is collective: every rank calls it once after every step with its own wish
    (0 = go on, else a signal number) and gets the same answer: 0, or the largest signal number
    any rank wished, one step later than the wish was made.
    """

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm.Dup()
        self._send = np.zeros(1, dtype=np.int64)
        self._recv = np.zeros(1, dtype=np.int64)
        self._req: Any = None

    def poll(self, wish: int) -> int:
        """Complete the vote posted by the previous call and post a new one with ``wish``;
        returns the previous vote's result (0 at the first call)."""
        result = 0
        if self._req is not None:
            self._req.Wait()
            result = int(self._recv[0])
        self._send[0] = wish
        self._req = self.comm.Iallreduce(self._send, self._recv, op=self._MPI.MAX)
        return result

    def settle(self, wish: int) -> int:
        """Complete the outstanding vote and take one more, blocking: the answer every rank
        agrees on now (at the end of a method, so no vote is left in flight)."""
        first = 0
        if self._req is not None:
            self._req.Wait()
            self._req = None
            first = int(self._recv[0])
        self._send[0] = wish
        self.comm.Allreduce(self._send, self._recv, op=self._MPI.MAX)
        return max(first, int(self._recv[0]))

    def _drain(self) -> None:
        if self._req is not None:
            self._req.Wait()
            self._req = None

    def close(self) -> None:
        self._drain()
        self.comm.Free()


def abort_grace_s(default: float = 1.0) -> float:
    """``DECOMP_ABORT_GRACE_S`` (seconds to let an error message out before ``MPI_Abort``);
    an unparsable or negative value falls back to ``default`` — the abort path must not fail."""
    import math
    import os

    try:
        value = float(os.environ.get("DECOMP_ABORT_GRACE_S", default))
    except ValueError:
        return default
    return value if math.isfinite(value) and 0 <= value <= 60 else default


def abort_job(comm: Any, message: str, code: int = 1) -> None:
    """Print ``[rank r] ERROR: message`` and end every rank of ``comm``'s job with ``code``.

    Whatever goes wrong in here (a broken stderr, an invalid grace period, an Abort that
    returns), the process still ends: this is the path that must never hang.
    """
    import os
    import sys
    import time

    try:
        rank = comm.Get_rank() if comm is not None else 0
        print(f"[rank {rank}] ERROR: {message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
    except BaseException:  # noqa: BLE001 (nothing may stop the abort)
        pass
    try:
        if comm is not None and comm.Get_size() > 1:
            # The launcher forwards stderr through its proxies; MPI_Abort tears them down at
            # once and can drop the message on a loaded node. A short grace lets it out.
            time.sleep(abort_grace_s())
            comm.Abort(code)  # the other ranks may be blocked in a collective: end them too
    finally:
        if comm is not None and comm.Get_size() > 1:
            os._exit(code)
