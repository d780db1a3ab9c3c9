"""The process's signal flag (``lifecycle.SIGNALS``) is shared by every RunControl of the
process — the methods of one ``decomp run``, the Trainer's successive fit() calls. Leaving a
RunControl resets it to "no step of a loop has completed": a RunControl entered later is in
its set-up (data, compile) until its loop's first step, so the signal backstop
(guard.Backstop) must not count on a stop vote then, even if the previous loop stepped. On one
process, no communicator."""

from __future__ import annotations

import os
import signal

from decomp.runner.guard import Backstop
from decomp.runner.lifecycle import SIGNALS, RunControl


def test_a_later_run_control_is_in_set_up_until_its_first_step() -> None:
    backstop = Backstop(SIGNALS, (signal.SIGTERM,))  # not started: its predicate only
    try:
        with RunControl() as first:
            assert not backstop._voting()  # entered, no step yet
            assert first.after_step(1) == 0
            assert backstop._voting()  # a step completed: the vote answers a signal
        assert not SIGNALS.stepping and not SIGNALS.deferred
        with RunControl():
            assert SIGNALS.deferred and not backstop._voting()  # set-up of the next one
    finally:
        os.close(backstop._r)
        os.close(backstop._w)
