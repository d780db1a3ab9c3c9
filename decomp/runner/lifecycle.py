"""How a run ends: termination signals, the exit codes they give, and "one rank's error ends
the whole job" for ``decomp run`` and for users' own scripts.

Signals: SIGINT (Ctrl-C), SIGTERM (``scancel``, a time limit) and SIGUSR1 (SLURM's
``--signal=B:USR1@T`` preemption notice) only set a flag (:class:`SignalFlag`); the loop's
stop vote (:class:`decomp.comm.control.StopVote`) makes every rank stop after the same step,
the method is checkpointed and marked ``interrupted``, and the job exits with 128 + the signal
number (130 for SIGINT, 143 for SIGTERM, 138 for SIGUSR1). A second SIGINT while the first is
being honoured ends the process at once with 130, never 0.

Errors: :func:`abort_on_error` installs a ``sys.excepthook`` (and ``threading.excepthook``)
that prints the error with the rank and calls ``MPI_Abort`` (exit code 1; 130 for a
``KeyboardInterrupt``), so an exception on one rank of a user's script never leaves the others
waiting in a collective.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from types import FrameType
from typing import Any

from decomp.comm.control import abort_job

#: the signals that stop a run with a checkpoint
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class Interrupted(Exception):  # noqa: N818 (a stop, not an error)
    """A stop signal. ``agreed``: raised by the stop vote on every rank after the same step
    (the run is checkpointed and every rank exits with :attr:`exit_code`); otherwise raised
    by the signal handler on this rank alone, before the loop started (nothing to save: the
    job is ended at once with the same exit code)."""

    def __init__(self, signum: int, step: int, *, agreed: bool = True) -> None:
        self.signum = int(signum)
        self.step = int(step)
        self.agreed = agreed
        when = f"after step {step}" if agreed else "before the first step"
        super().__init__(f"stopped by {signal_name(signum)} {when}")

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number."""
    return 128 + int(signum)


class SignalFlag:
    """While installed (a context manager, main thread only), the stop signals are caught.

    Before the loop (``deferred`` False) a signal raises :class:`Interrupted` (not agreed) at
    once: loading data or compiling kernels may take long, and nothing needs saving yet. In
    the loop (``deferred`` True, set by :class:`RunControl`) it only records :attr:`signum`
    (the first one; 0 = none) for the stop vote. A second SIGINT while one is pending ends
    the process at once with 130.
    """

    def __init__(self) -> None:
        self.signum = 0
        self.deferred = False
        self.stepping = False  # a step of the current method has completed (the vote runs)
        self._previous: dict[int, Any] = {}

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum and signum == signal.SIGINT:  # the second Ctrl-C: leave now
            print(f"[pid {os.getpid()}] second SIGINT: exiting at once", file=sys.stderr,
                  flush=True)
            os._exit(exit_code(signal.SIGINT))
        if not self.signum:
            self.signum = signum
        if not self.deferred:
            raise Interrupted(signum, 0, agreed=False)

    def __enter__(self) -> SignalFlag:
        if threading.current_thread() is threading.main_thread() and not self._previous:
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()


#: the process's one signal flag (``decomp run`` installs it first thing)
SIGNALS = SignalFlag()


_installed = False


def abort_on_error(comm: Any = None) -> None:
    """Make any uncaught exception on this rank (including KeyboardInterrupt and errors in
    threads) print ``[rank r] ERROR: ...`` with its traceback and end the whole MPI job.
    Idempotent; ``decomp.torch`` front ends call it when they are created under MPI."""
    global _installed
    if _installed:
        return
    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    if comm.Get_size() <= 1:
        return
    previous = sys.excepthook

    def hook(tp: type[BaseException], value: BaseException, tb: Any) -> None:
        text = "".join(traceback.format_exception(tp, value, tb)).rstrip()
        code = (value.exit_code if isinstance(value, Interrupted) else
                exit_code(signal.SIGINT) if isinstance(value, KeyboardInterrupt) else 1)
        try:
            abort_job(comm, f"uncaught {tp.__name__}: {value}\n{text}", code=code)
        finally:
            previous(tp, value, tb)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        hook(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)

    sys.excepthook = hook
    threading.excepthook = thread_hook
    _installed = True


class RunControl:
    """The lifecycle machinery one run's loop consults after every step: the signal flag, the
    collective stop vote and the watchdog (all optional: a ``RunControl()`` without a
    communicator only watches for signals on this process). Entering it (collective) starts
    the watchdog for the whole run, data loading included; :meth:`close` (collective) ends
    it."""

    def __init__(self, comm: Any = None, *, comm_timeout_s: float | None = None) -> None:
        from decomp.comm.control import StopVote
        from decomp.comm.watchdog import Watchdog
        from decomp.launch import start_timeout

        self.flag = SIGNALS
        self._owns_flag = False
        self.vote = StopVote(comm) if comm is not None else None
        self.watchdog = (Watchdog(comm, comm_timeout_s, startup_s=start_timeout() or None)
                         if comm is not None and comm_timeout_s else None)

    def __enter__(self) -> RunControl:
        if not self.flag.installed:
            self.flag.__enter__()
            self._owns_flag = True
        self.flag.signum = 0  # a signal before this point has raised already
        self.flag.deferred = True
        if self.watchdog is not None:
            self.watchdog.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.flag.deferred = False
        self.flag.stepping = False
        if self._owns_flag:
            self.flag.__exit__(*exc)
            self._owns_flag = False

    def enter_step(self, step: int) -> None:
        """Step ``step`` begins (the watchdog's watched call, until :meth:`leave_step`; the
        first one marks this rank ready: start-up is over)."""
        if self.watchdog is not None:
            self.watchdog.ready()
            self.watchdog.enter("a step")

    def leave_step(self) -> None:
        """The step entered last, its log and checkpoint are done."""
        if self.watchdog is not None:
            self.watchdog.leave()

    def after_step(self, step: int) -> int:
        """Collective (one pipelined vote): 0, or the signal every rank stops for now."""
        self.flag.stepping = True  # the stop vote now answers a signal (guard.Backstop)
        if self.watchdog is not None:
            self.watchdog.beat(step)
        if self.vote is None:
            return self.flag.signum
        return self.vote.poll(self.flag.signum)

    def settle(self) -> int:
        """Collective: the signal every rank agrees on at the end of a method (0: none)."""
        if self.vote is None:
            return self.flag.signum
        if self.watchdog is not None:
            self.watchdog.enter("the end-of-method stop vote")
        signum = self.vote.settle(self.flag.signum)
        if self.watchdog is not None:
            self.watchdog.leave()
        return signum

    def close(self) -> None:
        """Collective: free the vote's and the watchdog's communicators."""
        if self.watchdog is not None:
            self.watchdog.close()
        if self.vote is not None:
            self.vote.close()
