"""Two guards a rank of ``decomp run`` starts first thing, for what Python's own signal handling
cannot see.

- **Parent death**: a rank started by a launcher (Hydra's ``hydra_pmi_proxy``, ``mpiexec``,
  SLURM's ``slurmstepd``, Open MPI's ``prted``/``orted``) asks the kernel for SIGKILL when that
  parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), so ``kill -9`` of the proxy leaves no rank
  behind. A rank started from a shell is left alone (``nohup decomp run ... &`` must survive
  its shell).
- **Signal backstop**: Python runs a signal handler only when the main thread gets back to the
  interpreter. Before the step loop a stop signal ends the job at once (nothing to save); while
  the main thread sits in native code that released the interpreter (numba compiling a kernel,
  a long read), a helper thread woken by the signal (``signal.set_wakeup_fd``) ends the process
  with 128 + the signal's number if the main thread has not left within
  :data:`BACKSTOP_GRACE_S` (also when the handler's exception was swallowed by native code's
  error handling). In a run, a signal is only recorded for the stop vote, which answers after
  the next completed step; until a method's first step has completed (data loading, kernel
  warm-up, the first step's compilation) the backstop ends the job after the grace instead:
  nothing is lost (a method's checkpoints are from earlier steps).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

#: the parent processes that are an MPI/SLURM launcher (/proc/<ppid>/comm)
LAUNCHERS = ("hydra_pmi_proxy", "mpiexec", "mpiexec.hydra", "mpirun", "slurmstepd", "prted",
             "orted", "prterun")
#: how long the main thread has to act on a stop signal before the backstop ends the process
BACKSTOP_GRACE_S = 2.0
#: after a stop signal, a file write that makes no progress this long is taken as hung
WRITE_STALL_S = 10.0
_PR_SET_PDEATHSIG = 1


def parent_name(ppid: int | None = None) -> str:
    try:
        return Path(f"/proc/{ppid or os.getppid()}/comm").read_text().strip()
    except OSError:
        return ""


def end_with_parent() -> bool:
    """SIGKILL this process when its launcher parent dies (Linux; True if armed)."""
    ppid = os.getppid()
    if not sys.platform.startswith("linux") or parent_name(ppid) not in LAUNCHERS:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != ppid:  # the parent died before the request: it will not fire
        os._exit(1)
    return True


class Backstop:
    """The signal backstop thread (see the module doc). ``flag``: the process's
    :class:`~decomp.runner.lifecycle.SignalFlag` (its ``deferred`` says the loop runs)."""

    def __init__(self, flag: Any, stop_signals: tuple[int, ...]) -> None:
        self.flag = flag
        self.stop_signals = {int(s) for s in stop_signals}
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        self._previous_fd = -1

    def start(self) -> Backstop:
        self._previous_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, name="decomp-signal-backstop", daemon=True).start()
        return self

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._r, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in self.stop_signals:
                    self._later(signum)

    def _voting(self) -> bool:
        """The step loop runs and the stop vote will answer (a step has completed)."""
        return bool(self.flag.deferred and self.flag.stepping)

    def _later(self, signum: int) -> None:
        """After a stop signal: end the process if it has not stopped within the grace before
        the first step, or if a file write makes no progress for :func:`write_stall_s`."""
        from decomp.runner import diskfull

        stall = write_stall_s()
        deadline = time.monotonic() + BACKSTOP_GRACE_S
        while True:
            time.sleep(0.1)
            w = diskfull.CURRENT
            if w is not None:
                quiet = time.monotonic() - w.since
                if quiet >= stall:
                    self._end(signum, stalled_message(signum, w, quiet))
                continue
            if self._voting():  # the stop vote stops every rank; keep watching its writes
                if self.flag.installed:
                    continue
                return
            if time.monotonic() >= deadline:
                # data loading or the first step's compilation (the signal is only recorded
                # there), or native code swallowed the handler's exception
                self._end(signum, f"stopped by {signal.Signals(signum).name} before the first "
                          "step (loading data or compiling kernels; the process did not stop "
                          f"within {BACKSTOP_GRACE_S:.0f} s): ending the job at once, nothing "
                          "to save yet")

    def _end(self, signum: int, message: str) -> None:
        try:
            MPI = sys.modules.get("mpi4py.MPI")  # importing it would initialise MPI
            if MPI is not None and MPI.Is_initialized() and not MPI.Is_finalized():
                from decomp.comm.control import abort_job

                abort_job(MPI.COMM_WORLD, message, 128 + signum)
        except Exception:  # noqa: BLE001, S110 (the process ends below whatever happens)
            pass
        rank = os.environ.get("PMI_RANK", os.environ.get("SLURM_PROCID", "?"))
        print(f"[rank {rank}] ERROR: {message}", file=sys.stderr, flush=True)
        os._exit(128 + signum)


def stalled_message(signum: int, w: Any, quiet: float) -> str:
    """The error of a stop signal that found the write ``w`` stalled for ``quiet`` s."""
    return (f"stopped by {signal.Signals(signum).name} while writing {w.what} {w.path}: no "
            f"progress for {quiet:.0f} s (a hung file system?); ending the job at once, the "
            "last complete checkpoint is kept")


def write_stall_s() -> float:
    """How long a file write may make no progress after a stop signal before the job ends
    (``DECOMP_WRITE_STALL_S``, default :data:`WRITE_STALL_S`; an invalid value: the default)."""
    try:
        v = float(os.environ.get("DECOMP_WRITE_STALL_S", WRITE_STALL_S))
    except ValueError:
        return WRITE_STALL_S
    return v if v > 0 and v == v else WRITE_STALL_S


def arm(flag: Any, stop_signals: tuple[int, ...]) -> None:
    """Both guards, from the main thread, before MPI is initialised."""
    end_with_parent()
    if threading.current_thread() is threading.main_thread():
        Backstop(flag, stop_signals).start()
