"""What a torch front end holds, and when it lets go: the run-folder lock of the folders it
writes, and a :class:`~decomp.torch.DistributedOptimizer`'s watchdog.

- **Folder locks.** :class:`decomp.torch.MetricsWriter`, ``opt.save(dir)`` and the Trainer's
  ``metrics_path`` take the lock ``decomp run`` takes (:mod:`decomp.runner.lock`: the file
  ``.<name>.lock`` beside the folder, with the owner's host, PID and start time; a stale lock
  is taken over), before anything is written. A folder in use by another job (``decomp run``
  or another script) is refused on every rank with the same
  :class:`~decomp.errors.LaunchError` naming its owner, and nothing is written. Within one
  process the holders of a folder share its lock (a ``MetricsWriter`` and ``opt.save`` into
  the same folder); it is released when the last one lets go: the writer's ``close()``, the
  optimizer's ``close()`` or its collection, the Trainer's collection, the process's exit.
- **The optimizer's watchdog.** Dropped (garbage-collected), an optimizer stops its watchdog
  thread and tells its peers it is done (not collective); ``opt.close()`` (collective) also
  frees its duplicate communicators. A process building many optimizers keeps no thread per
  dropped one.
- **The optimizer's communicators.** An optimizer on more than one rank holds duplicates of
  its communicator: the collective check's, the watchdog's (unless ``comm_timeout=None``) and,
  from the first ``should_stop()``, the stop vote's. ``MPI_Comm_free`` is collective, so a
  garbage collector, which runs on each rank at its own moment, must not call it: a dropped
  optimizer's communicators stay until ``opt.close()`` (it is gone: never) or the process
  exits, as mpi4py leaves a dropped ``Comm`` to its owner and as an unclosed file stays open
  until collected. What a user gets instead: a ``ResourceWarning`` naming ``opt.close()`` when
  an unclosed optimizer is collected (shown, like an unclosed file's, under ``python -X dev``,
  ``-W default`` or pytest), and a bound: building an optimizer that would take this process
  past ``DECOMP_MAX_OPEN_COMMS`` (default 1024; 0: no bound) communicators held by unclosed
  optimizers raises :class:`~decomp.errors.UsageError` naming the fix, on every rank alike
  (the count changes only at construction and ``close()``, both collective), before MPI runs
  out (MPICH has 2048 context ids per process: its ``MPI_Comm_dup`` fails after 2046).
"""

from __future__ import annotations

import atexit
import os
import warnings
import weakref
from pathlib import Path
from typing import Any

from decomp.errors import LaunchError, UsageError
from decomp.runner import lock as runlock
from decomp.torch import guard as callguard

#: this process's folder locks: lock path -> [RunLock, holders]
_HELD: dict[Path, list[Any]] = {}


class FolderHold:
    """One holder's share of a folder's lock (rank 0 only holds the file; other ranks' holds
    are empty). :meth:`release` is idempotent."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def release(self) -> None:
        path, self.path = self.path, None
        if path is None or path not in _HELD:
            return
        entry = _HELD[path]
        entry[1] -= 1
        if entry[1] <= 0:
            del _HELD[path]
            entry[0].release()


def hold_folder(comm: Any, directory: str | Path, what: str) -> FolderHold:
    """Collective over ``comm``: rank 0 takes the lock of ``directory`` (the folder ``what``
    writes) before anything is written there; every rank raises the same LaunchError when
    another job holds it."""
    d = Path(directory).absolute()
    path = runlock.lock_path(d.parent, d.name)
    error = ""
    if comm.Get_rank() == 0:
        if path in _HELD:
            _HELD[path][1] += 1
        else:
            try:
                d.parent.mkdir(parents=True, exist_ok=True)
                _HELD[path] = [runlock.acquire(d.parent, d.name, d), 1]
            except (LaunchError, OSError) as e:
                error = f"{what}: {e}"
    if comm.Get_size() > 1:
        error = comm.bcast(error, root=0)
    if error:
        raise LaunchError(error)
    return FolderHold(path if comm.Get_rank() == 0 else None)


def held_by(owner: Any, comm: Any, directory: str | Path, what: str) -> FolderHold:
    """:func:`hold_folder`, released when ``owner`` is collected (or at exit) at the latest."""
    hold = hold_folder(comm, directory, what)
    weakref.finalize(owner, hold.release)
    return hold


# ---- communicators ---------------------------------------------------------------------------

MAX_OPEN_COMMS = "DECOMP_MAX_OPEN_COMMS"
DEFAULT_MAX_OPEN_COMMS = 1024


class Comms:
    """The duplicate communicators of one optimizer, until its ``close()``: counted from its
    guard (the check's and the watchdog's) and its stop poll (the vote's), so a dropped
    optimizer's still count."""

    def __init__(self, opt: Any) -> None:
        self.guard = opt._guard
        self.poll: Any = None
        self.owner = weakref.ref(opt)

    def count(self) -> int:
        g, wd = self.guard, self.guard.watchdog
        return (int(g.comm is not None) + int(wd is not None and wd.comm is not None)
                + int(self.poll is not None and self.poll.vote is not None))


#: the optimizers of this process not closed yet (alive or dropped)
_OPEN: dict[int, Comms] = {}
#: [the process is exiting (MPI_Finalize frees every communicator), its hook registered]
_EXIT = [False, False]


def max_open_comms() -> int:
    """``DECOMP_MAX_OPEN_COMMS`` (default 1024; 0: no bound)."""
    text = os.environ.get(MAX_OPEN_COMMS, "")
    try:
        value = int(text) if text.strip() else DEFAULT_MAX_OPEN_COMMS
    except ValueError:
        raise UsageError(f"{MAX_OPEN_COMMS}={text!r}: a whole number of communicators "
                         f"(default {DEFAULT_MAX_OPEN_COMMS}; 0: no bound)") from None
    return max(value, 0)


def open_comms() -> tuple[int, int, int]:
    """(communicators held, optimizers not closed, of which dropped) in this process."""
    records = list(_OPEN.values())
    return (sum(r.count() for r in records), len(records),
            sum(r.owner() is None for r in records))


def guarded(comm: Any, comm_timeout: float | None, size: int) -> Any:
    """A new optimizer's :class:`~decomp.torch.guard.CallGuard`, once this process has room
    for its communicators (:func:`max_open_comms`): else the same UsageError on every rank."""
    limit = max_open_comms()
    need = (1 + (comm_timeout is not None)) if comm.Get_size() > 1 else 0
    held, optimizers, dropped = open_comms()
    if limit and need and held + need > limit:
        raise UsageError(
            f"DistributedOptimizer: this process holds {held} MPI communicators of {optimizers} "
            f"optimizer(s) never closed ({dropped} of them dropped without opt.close()); this "
            f"one needs {need} more, past {MAX_OPEN_COMMS}={limit}. Freeing a communicator is "
            f"collective, so a dropped optimizer keeps its communicators until the process "
            f"exits, and MPI runs out of them (MPICH: 2048 per process) with an error of its "
            f"own. Call opt.close() on every rank when you are done with an optimizer (or "
            f"raise {MAX_OPEN_COMMS})")
    return callguard.CallGuard(comm, comm_timeout, size)


def track_poll(opt: Any, poll: Any) -> Any:
    """``opt.should_stop()``'s poll: its vote's communicator counts as the optimizer's."""
    record = opt.__dict__.get("_comms")
    if record is not None and record.poll is None:
        record.poll = poll
    return poll


def _exiting() -> None:
    _EXIT[0] = True


def _dropped(guard: Any, holds: dict[Path, FolderHold], record: Comms) -> None:
    """An optimizer was collected (or the process exits): not collective."""
    guard.finish()
    for h in list(holds.values()):
        h.release()
    holds.clear()
    n = record.count()
    if n and not _EXIT[0]:
        warnings.warn(f"a DistributedOptimizer was dropped without opt.close(): its {n} MPI "
                      f"communicator(s) stay allocated until the process exits (freeing one "
                      f"is collective: a garbage collector must not). Call opt.close() on "
                      f"every rank when done with an optimizer", ResourceWarning, stacklevel=2)


def attach(opt: Any) -> None:
    """From ``DistributedOptimizer.__init__``: let go of its watchdog thread and folder locks
    when it is collected; count its communicators until it is closed."""
    holds: dict[Path, FolderHold] = opt.__dict__.setdefault("_folders", {})
    record = opt.__dict__["_comms"] = Comms(opt)
    _OPEN[id(record)] = record
    opt.__dict__["_finalizer"] = weakref.finalize(opt, _dropped, opt._guard, holds, record)
    if not _EXIT[1]:  # registered after weakref.finalize's own exit hook: runs before it
        atexit.register(_exiting)
        _EXIT[1] = True


def hold_for_save(opt: Any, directory: str | Path) -> None:
    """``opt.save(directory)``: the folder's lock, held until the optimizer is closed or
    collected (collective the first time for each folder)."""
    holds: dict[Path, FolderHold] = opt.__dict__.setdefault("_folders", {})
    key = Path(directory).absolute()
    if key not in holds:
        holds[key] = hold_folder(opt.comm, key, f"opt.save({directory})")


def close(opt: Any) -> None:
    """``opt.close()``: collective; idempotent. Frees every communicator it holds (the stop
    vote's too)."""
    fin = opt.__dict__.get("_finalizer")
    if fin is not None:
        fin.detach()
    opt._guard.close()
    poll = opt.__dict__.get("_stop")
    if poll is not None:
        poll.close()
    record = opt.__dict__.get("_comms")
    if record is not None:
        _OPEN.pop(id(record), None)
    holds = opt.__dict__.get("_folders", {})
    for h in list(holds.values()):
        h.release()
    holds.clear()
