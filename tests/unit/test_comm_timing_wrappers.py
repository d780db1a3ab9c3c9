"""The timing wrappers (TimedTransport, TimedCodec) book each call's duration to its
category. Written for a gap mutation testing found (docs/testing.md, "Mutation testing")."""

from __future__ import annotations

import time

import numpy as np
import pytest

from decomp.comm.timing import COMM, COMPRESS, Stopwatch, TimedCodec, TimedTransport

PAUSE = 0.003


class Slow:
    """A transport or codec whose every call sleeps PAUSE and returns its own name."""

    def __getattr__(self, name: str):  # noqa: ANN204
        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            time.sleep(PAUSE)
            return name
        return call


TRANSPORT = {"exchange": (np.zeros(2, np.uint8),), "allgather": (np.zeros(2, np.uint8),),
             "allreduce_sum": (np.zeros(2),), "exchange_start": (np.zeros(2, np.uint8),),
             "exchange_finish": (), "gather": (np.zeros(2, np.uint8),),
             "gather_start": (np.zeros(2, np.uint8),), "gather_finish": (),
             "broadcast_bytes": (np.zeros(2, np.uint8),), "broadcast": (np.zeros(2),)}
CODEC = {"encode": (np.zeros(2),), "decode_add": (np.zeros(2, np.uint8), np.zeros(2)),
         "decode": (np.zeros(2, np.uint8),)}


@pytest.mark.parametrize("method", list(TRANSPORT) + list(CODEC))
def test_timed_wrappers_book_each_call_s_duration(method: str) -> None:
    """A timed transport (codec) passes each call through and adds the call's duration, no
    less than what the call slept and no more than the wall time around it, to the comm
    (compress) total, and nothing to the other totals."""
    watch = Stopwatch()
    is_codec = method in CODEC
    wrapped = (TimedCodec if is_codec else TimedTransport)(Slow(), watch)
    args = (CODEC if is_codec else TRANSPORT)[method]
    t0 = time.perf_counter()
    got = getattr(wrapped, method)(*args)
    wall = time.perf_counter() - t0
    if got is not None:  # the None-returning calls return the inner's value unchanged too
        assert got == method
    booked, other = (COMPRESS, COMM) if is_codec else (COMM, COMPRESS)
    assert PAUSE <= watch.totals[booked] <= wall
    assert watch.totals[other] == 0.0
