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
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from decomp.errors import LaunchError
from decomp.runner import lock as runlock

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


def _dropped(guard: Any, holds: dict[Path, FolderHold]) -> None:
    """An optimizer was collected (or the process exits): not collective."""
    guard.finish()
    for h in list(holds.values()):
        h.release()
    holds.clear()


def attach(opt: Any) -> None:
    """From ``DistributedOptimizer.__init__``: let go of its watchdog thread and folder locks
    when it is collected."""
    holds: dict[Path, FolderHold] = opt.__dict__.setdefault("_folders", {})
    opt.__dict__["_finalizer"] = weakref.finalize(opt, _dropped, opt._guard, holds)


def hold_for_save(opt: Any, directory: str | Path) -> None:
    """``opt.save(directory)``: the folder's lock, held until the optimizer is closed or
    collected (collective the first time for each folder)."""
    holds: dict[Path, FolderHold] = opt.__dict__.setdefault("_folders", {})
    key = Path(directory).absolute()
    if key not in holds:
        holds[key] = hold_folder(opt.comm, key, f"opt.save({directory})")


def close(opt: Any) -> None:
    """``opt.close()``: collective; idempotent."""
    fin = opt.__dict__.get("_finalizer")
    if fin is not None:
        fin.detach()
    opt._guard.close()
    holds = opt.__dict__.get("_folders", {})
    for h in list(holds.values()):
        h.release()
    holds.clear()
